//! `cargo xtask fuzz` writes its seed corpora and dictionaries with this: `callguard-fuzz-seeds
//! DIR` fills `DIR/seeds/<target>/` and `DIR/<target>.dict` for each fuzz target in `fuzz/`.
//!
//! The SIP seeds are the messages the tests already send (phones and softphones, every
//! sipvicious tool in both forms, the torture messages) and the requests whose readings were
//! checked against Kamailio (`tests/kamailio`); the configuration seeds are the shipped commented
//! file and small variants; the list seeds are queries in the seeds' own syntax. A fuzzer that
//! starts from these gets past the first line of a request at once.

use std::{fs, path::Path};

use callguard_tests::sipmsg::{self, SvTool};

/// Requests whose readings differ between SIP stacks (see tests/kamailio/FINDINGS.md).
fn tricky() -> Vec<String> {
    let head = "INVITE sip:+882777@pbx SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.2:5090;branch=z9hG4bK1;rport\r\n\
                From: <sip:101@tenant.example>;tag=a1\r\n";
    let tail = "Call-ID: c1@caller\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    [
        "To: <sip:+882777@pbx>;tag=",
        "To: \"a\\\";tag=1\" <sip:+882777@pbx>",
        "To: <sip:+882777@pbx>;x=\";tag=1\"",
        "To          : <sip:+882777@pbx>\r\nTo: <sip:+882777@pbx>;tag=t2",
        "To: <sip:+882777@pbx>, <sip:999@pbx>;tag=t1",
        "t: <sip:+882777@pbx>\r\nTo: <sip:+882777@pbx>;tag=t2",
        "To: <sip:+882777@pbx>\r\n ;tag=t1",
        "To: sip:+882777@pbx;tag=cg-0123456789abcdef",
        "To: <sip:+882777;isub=1@pbx;user=phone>",
        "To: <sip:%2B882777@pbx>",
    ]
    .iter()
    .map(|to| format!("{head}{to}\r\n{tail}"))
    .collect()
}

/// The words a SIP mutator should know: methods, header names long and compact, parameters,
/// URI schemes, the separators that decide readings.
const SIP_WORDS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "REGISTER",
    "OPTIONS",
    "PRACK",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
    "INFO",
    "REFER",
    "MESSAGE",
    "UPDATE",
    "SIP/2.0",
    "SIP/2.0/UDP",
    "SIP/2.0/TCP",
    "\r\n",
    "\r\n\r\n",
    "\r\n ",
    "Via:",
    "v:",
    "From:",
    "f:",
    "To:",
    "t:",
    "Call-ID:",
    "i:",
    "CSeq:",
    "Contact:",
    "m:",
    "User-Agent:",
    "Content-Length:",
    "l:",
    "Max-Forwards:",
    "Route:",
    "Record-Route:",
    "P-Asserted-Identity:",
    "Authorization:",
    "Proxy-Authorization:",
    ";tag=",
    ";TAG=",
    ";branch=z9hG4bK",
    ";rport",
    ";received=",
    ";user=phone",
    ";isub=",
    ";phone-context=",
    "sip:",
    "sips:",
    "tel:",
    "<",
    ">",
    "\"",
    "\\",
    "@",
    ",",
    ";",
    "?",
    "%2B",
    "%30",
    "+",
    "00",
    "*",
    "#",
    "cg-",
    "friendly-scanner",
    "sipvicious",
    "        :",
];

/// A libFuzzer dictionary: one quoted, escaped word per line.
fn dict(words: impl IntoIterator<Item = String>) -> String {
    let mut out = String::new();
    for w in words {
        out.push('"');
        for b in w.bytes() {
            match b {
                b'"' | b'\\' => out.push_str(&format!("\\{}", b as char)),
                0x20..=0x7e => out.push(b as char),
                _ => out.push_str(&format!("\\x{b:02x}")),
            }
        }
        out.push_str("\"\n");
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()));
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: callguard-fuzz-seeds DIR");
    let out = Path::new(&out);
    let seeds = |target: &str| {
        let d = out.join("seeds").join(target);
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        d
    };

    let mut sip: Vec<(String, Vec<u8>)> = Vec::new();
    for (who, m) in sipmsg::phones() {
        sip.push((format!("phone-{who}"), m));
    }
    for (tool, method) in [
        (SvTool::Svmap, "OPTIONS"),
        (SvTool::Svwar, "REGISTER"),
        (SvTool::Svwar, "INVITE"),
        (SvTool::Svcrack, "REGISTER"),
    ] {
        for compact in [false, true] {
            sip.push((
                format!("sipvicious-{tool:?}-{method}-{compact}"),
                sipmsg::sipvicious(tool, method, "100", "198.18.0.1", compact),
            ));
        }
    }
    for (name, m, _) in sipmsg::torture() {
        sip.push((format!("torture-{name}"), m));
    }
    for (i, m) in tricky().into_iter().enumerate() {
        sip.push((format!("kamailio-{i}"), m.into_bytes()));
    }
    for target in ["message", "sip_reader"] {
        let d = seeds(target);
        for (name, m) in &sip {
            let name: String =
                name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            write(&d, &name, m);
        }
        fs::write(out.join(format!("{target}.dict")), dict(SIP_WORDS.iter().map(|w| (*w).to_owned())))
            .expect("dict");
    }

    let shipped = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/callguard.toml"))
        .expect("dist/callguard.toml");
    let d = seeds("config");
    write(&d, "shipped", shipped.as_bytes());
    write(&d, "empty", b"");
    write(&d, "rates", b"[rate]\nrequests = { rate = 0, burst = 0 }\ninvite = { rate = 5, burst = 10 }\nescalate_after = 2\n");
    write(&d, "ports", b"[ports]\nudp = [\"5060\", \"5061-5080\"]\ntcp = []\n[sip]\ndrop_methods = [\"unknown\", \"options\"]\n");
    // Every section and key of the shipped file, as the words of the configuration's dictionary.
    let mut words: Vec<String> = Vec::new();
    for line in shipped.lines().map(|l| l.trim_start_matches("# ").trim()) {
        if line.starts_with('[') && line.ends_with(']') {
            words.push(line.to_owned());
        } else if let Some((key, _)) = line.split_once(" = ")
            && key.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
        {
            words.push(format!("{key} = "));
        }
    }
    words.extend(
        ["\"drop\"", "\"pass\"", "true", "false", "{ rate = ", ", burst = ", " }", "[[", "]]"]
            .map(String::from),
    );
    words.sort();
    words.dedup();
    fs::write(out.join("config.dict"), dict(words)).expect("dict");

    let d = seeds("list_query");
    for (i, q) in [
        "filter=number_prefix%20startswith%20'%2B90'%20and%20description%20contains%20'it''s'&orderby=id%20desc&top=5",
        "search=sat&skip=1&top=1",
        "orderby=description%20asc,id%20desc",
        "filter=%7B%22opts%22%3A%7B%22title%22%3A%22a%22%7D%7D&mask=id,opts.title&order=-id&limit=2&flat=true",
        "order=%5B%7B%22id%22%3A%22desc%22%7D%2C%22description%22%5D&offset=1",
    ]
    .iter()
    .enumerate()
    {
        write(&d, &format!("q{i}"), q.as_bytes());
    }
    let words = [
        "filter=",
        "search=",
        "orderby=",
        "skip=",
        "top=",
        "mask=",
        "order=",
        "offset=",
        "limit=",
        "flat=",
        "&",
        "%20",
        "%27",
        " eq ",
        " ne ",
        " lt ",
        " le ",
        " gt ",
        " ge ",
        " startswith ",
        " contains ",
        " and ",
        " asc",
        " desc",
        "'",
        "''",
        "id",
        "number_prefix",
        "description",
        "opts.title",
        "-",
        "{",
        "}",
        "[",
        "]",
        ":",
        "\"",
    ];
    fs::write(out.join("list_query.dict"), dict(words.iter().map(|w| (*w).to_owned()))).expect("dict");
    println!(
        "fuzz seeds: {} SIP messages, 4 configurations, 5 queries, in {}",
        sip.len(),
        out.join("seeds").display()
    );
}
