//! Reading address lists for `callguard net import`.
//!
//! Accepted, in one file or mixed: one address or prefix a line with `#` comments (FireHOL
//! netsets are this format), blank lines, and `ipset save` output (`create` lines are skipped,
//! `add SET ENTRY [options]` lines give ENTRY). Ranges (`a-b`) are not accepted: convert them
//! first (`ipset` hash:net sets never hold ranges).
//!
//! Parsing stops at the first bad line and names it; the caller then applies nothing.

use std::io::BufRead;

use ipnet::IpNet;

use crate::net::parse_net;

/// A line that is not an address, a prefix, a comment or ipset syntax.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub(super) struct BadLine {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

/// Parses a whole list. `progress` is called with the bytes read so far every 64 KiB.
pub(super) fn parse(
    reader: impl BufRead,
    mut progress: impl FnMut(u64),
) -> Result<Vec<IpNet>, anyhow::Error> {
    let mut out = Vec::new();
    let mut read = 0u64;
    let mut last_report = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        read += line.len() as u64 + 1;
        if read - last_report > 65536 {
            progress(read);
            last_report = read;
        }
        if let Some(net) = parse_line(&line).map_err(|message| BadLine { line: i + 1, message })? {
            out.push(net);
        }
    }
    progress(read);
    Ok(out)
}

/// One line: `Ok(None)` for blank lines, comments and ipset `create`/`COMMIT` lines.
pub(super) fn parse_line(line: &str) -> Result<Option<IpNet>, String> {
    let text = line.split('#').next().unwrap_or("").trim();
    if text.is_empty() {
        return Ok(None);
    }
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("");
    let entry = match first {
        "create" | "COMMIT" | "flush" | "destroy" => return Ok(None),
        "add" | "-A" => {
            let _set = words.next().ok_or("ipset `add` without a set name")?;
            words.next().ok_or("ipset `add` without an entry")?
        }
        _ if words.next().is_some() => return Err(format!("`{text}`: expected one address or prefix")),
        _ => first,
    };
    if entry.contains('-') && !entry.contains(':') {
        return Err(format!("`{entry}` is a range; give prefixes"));
    }
    parse_net(entry).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_firehol_and_ipset_formats() {
        let text = "\
# FireHOL netset
198.18.0.0/24
198.18.1.7   # one host
2001:db8:bad::/48

create blocklist hash:net family inet hashsize 1024 maxelem 65536
add blocklist 198.18.2.0/23
add blocklist 198.18.9.9 timeout 300
";
        let nets = parse(text.as_bytes(), |_| {}).unwrap();
        let got: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            ["198.18.0.0/24", "198.18.1.7/32", "2001:db8:bad::/48", "198.18.2.0/23", "198.18.9.9/32"]
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse("198.18.0.0/24\n\n198.18.300.1\n".as_bytes(), |_| {}).unwrap_err();
        let bad = err.downcast_ref::<BadLine>().unwrap();
        assert_eq!(bad.line, 3);
        assert!(bad.message.contains("198.18.300.1"), "{}", bad.message);
        assert!(parse_line("198.18.0.1-198.18.0.9").unwrap_err().contains("range"));
        assert!(parse_line("198.18.0.1 extra").is_err());
        assert!(parse_line("198.18.0.1/24").unwrap_err().contains("host bits"));
    }
}
