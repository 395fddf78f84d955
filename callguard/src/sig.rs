//! Scanner signatures: the model, the shipped default set, and the compiler that turns the
//! signatures in force into the automata the XDP program walks (`callguard_common::sig`).
//!
//! The automata are built with `regex-automata` (a dense DFA per field, case-insensitive, all
//! patterns reported); what is written by hand here is only the export of its transition table
//! into the kernel's fixed row format, with the three fields sharing one set of byte classes.

use callguard_common::sig::{
    CLASS_EOI, DFA_STATES, DfaHead, DfaRow, Hit, MODE_DRY_RUN, MODE_ENFORCE, MODE_NONE, SLOTS, STATE_DEAD,
    field,
};
use chrono::{DateTime, Utc};
use regex_automata::{
    Anchored, MatchKind,
    dfa::{Automaton as _, StartKind, dense},
    nfa::thompson,
    util::{primitives::StateID, start, syntax},
};
use serde::{Deserialize, Serialize};

/// Longest signature text, in bytes.
pub const TEXT_MAX: usize = 64;

/// Which part of a request a signature looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SigField {
    /// The User-Agent header value.
    UserAgent,
    /// The display name or the URI user of From or To (either header).
    FromTo,
}

impl SigField {
    /// The value called `name` (as [`SigField::name`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
    /// Every value.
    pub const ALL: [Self; 2] = [Self::UserAgent, Self::FromTo];
    /// Name used in the store, the API and tables.
    pub const fn name(self) -> &'static str {
        match self {
            Self::UserAgent => "user-agent",
            Self::FromTo => "from-to",
        }
    }
}

/// How the text must occur.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SigMatch {
    /// The field starts with the text.
    Prefix,
    /// The field contains the text.
    Contains,
}

impl SigMatch {
    /// The value called `name` (as [`SigMatch::name`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
    /// Every value.
    pub const ALL: [Self; 2] = [Self::Prefix, Self::Contains];
    /// Name used in the store, the API and tables.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Contains => "contains",
        }
    }
}

/// What a match does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SigMode {
    /// Count and drop.
    Enforce,
    /// Count only (try a signature before enforcing it).
    DryRun,
}

impl SigMode {
    /// The value called `name` (as [`SigMode::name`] spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
    /// Every value.
    pub const ALL: [Self; 2] = [Self::Enforce, Self::DryRun];
    /// Name used in the store, the API and tables.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::DryRun => "dry-run",
        }
    }
}

/// A signature to store (validated with [`NewSignature::validate`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewSignature {
    /// Field looked at.
    pub field: SigField,
    /// Prefix or substring.
    #[serde(rename = "match")]
    pub matches: SigMatch,
    /// The literal, matched without regard to ASCII case.
    pub text: String,
    /// Enforce or dry-run.
    pub mode: SigMode,
    /// Free text for people.
    #[serde(default)]
    pub comment: String,
}

impl NewSignature {
    /// Checks the text: 1 to [`TEXT_MAX`] bytes of printable ASCII.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.text.as_bytes();
        if t.is_empty() || t.len() > TEXT_MAX {
            return Err(format!("must be 1 to {TEXT_MAX} bytes long, not {}", t.len()));
        }
        if let Some(c) = t.iter().find(|c| !(0x20..0x7f).contains(*c)) {
            return Err(format!("must be printable ASCII; byte 0x{c:02x} is not"));
        }
        Ok(())
    }
}

/// A stored signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Signature {
    /// Never reused.
    pub id: u32,
    /// What it matches and does.
    #[serde(flatten)]
    pub sig: NewSignature,
    /// Counter slot in the kernel (1 to `SLOTS - 1`), stable for the signature's life.
    pub slot: u16,
    /// `default` (shipped) or `operator`.
    pub origin: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

/// The default set: scanners and attack tools seen in SIP honeypot reports and in the lists of
/// Kamailio's stock configuration, secfilter and sipnab. All match as a prefix, the cheapest
/// form in the kernel (the automaton dies after a few bytes of a legitimate value).
pub const DEFAULTS: &[(SigField, &str, SigMode, &str)] = &[
    (SigField::UserAgent, "friendly-scanner", SigMode::Enforce, "sipvicious svmap/svwar/svcrack"),
    (SigField::UserAgent, "sipvicious", SigMode::Enforce, "sipvicious forks"),
    (SigField::FromTo, "sipvicious", SigMode::Enforce, "sipvicious display name (also with -c)"),
    (SigField::UserAgent, "sipcli", SigMode::Enforce, "sipcli"),
    (SigField::UserAgent, "sip-scan", SigMode::Enforce, "sip-scan"),
    (SigField::UserAgent, "sipscan", SigMode::Enforce, "SIPScan"),
    (SigField::UserAgent, "vaxsipuseragent", SigMode::Enforce, "VaxSIP-based dialers"),
    (SigField::UserAgent, "pplsip", SigMode::Enforce, "sippts (Pepelux)"),
    (SigField::UserAgent, "iwar", SigMode::Enforce, "iWar war dialer"),
    (SigField::UserAgent, "sundayddr", SigMode::Enforce, "sundayddr worm"),
    (SigField::UserAgent, "smap", SigMode::Enforce, "smap SIP mapper"),
    (SigField::UserAgent, "sivus", SigMode::Enforce, "SiVuS scanner"),
    (SigField::UserAgent, "sippts", SigMode::Enforce, "sippts"),
    (SigField::UserAgent, "voipsec", SigMode::Enforce, "VoIPSec scanner"),
    (SigField::UserAgent, "sipsak", SigMode::DryRun, "sipsak: also an admin's diagnostic tool"),
];

/// The default set as rows to store.
pub fn defaults() -> Vec<NewSignature> {
    DEFAULTS
        .iter()
        .map(|&(field, text, mode, comment)| NewSignature {
            field,
            matches: SigMatch::Prefix,
            text: text.to_owned(),
            mode,
            comment: comment.to_owned(),
        })
        .collect()
}

/// The default set numbered as a fresh store numbers it: ids and counter slots 1, 2, ... (for
/// tests and benchmarks that need signatures without a store).
pub fn numbered_defaults() -> Vec<Signature> {
    defaults()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Signature {
            id: i as u32 + 1,
            sig: s,
            slot: i as u16 + 1,
            origin: "default".into(),
            created_at: Utc::now(),
        })
        .collect()
}

/// Why signatures could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// regex-automata refused (should not happen for escaped literals; size limits can).
    #[error("building the automaton: {0}")]
    Build(String),
    /// More states than a bank holds.
    #[error("the signatures need {0} automaton states; the kernel holds {max}", max = DFA_STATES - 1)]
    TooManyStates(usize),
    /// More distinct byte classes than a row holds.
    #[error("the signatures use {0} distinct character classes; the kernel holds {CLASS_EOI}")]
    TooManyClasses(usize),
}

/// A compiled bank: what goes into `CG_SIG_HEAD[bank]` and `CG_SIG_DFA[bank]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    /// Byte classes and start states.
    pub head: DfaHead,
    /// Rows, state 0 (dead) first.
    pub rows: Vec<DfaRow>,
}

impl Compiled {
    /// Walks `value` as the kernel does (the same function), for field `f` (`sig::field`).
    pub fn walk(&self, f: usize, value: &[u8]) -> Hit {
        let start = self.head.start[f];
        if start == STATE_DEAD || value.is_empty() {
            return Hit::default();
        }
        callguard_common::sig::walk(
            &self.head,
            start,
            |k| value[k],
            value.len(),
            callguard_common::sip::FIELD_MAX,
            |s, class| self.rows.get(usize::from(s)).map_or(STATE_DEAD, |r| r.next[class]),
            |s| self.rows.get(usize::from(s)).map_or((MODE_NONE, 0), |r| (r.mode, r.slot)),
        )
    }
}

/// The regular expression for one signature over a field value (anchored at the value start).
fn pattern(field: SigField, matches: SigMatch, text: &str) -> String {
    let lit = regex_syntax::escape(text);
    // Where the URI starts (RFC 3261 §25.1, name-addr / addr-spec): after a display name, quoted
    // (with `\"` escapes) or not, and `<`; or at the value's start. Only that first URI is the
    // From/To URI: one in a parameter (`;x=sip:…`) is not. Anchored so, every automaton is dead
    // once the URI user has ended, and the kernel stops reading the value there instead of
    // walking its host and parameters.
    const URI_START: &str = r#"(?:"(?:[^"\\]|\\(?s:.))*"[ \t]*<|[^"<]*<)?"#;
    // A URI user ends at '@' (sip/sips; no '@' means no user) or at ';', '>', '?' (tel).
    match (field, matches) {
        (SigField::UserAgent, SigMatch::Prefix) => lit,
        (SigField::UserAgent, SigMatch::Contains) => format!("(?s:.)*{lit}"),
        // Display name, quoted or not; or the user of a sip, sips or tel URI.
        (SigField::FromTo, SigMatch::Prefix) => {
            format!("\"?{lit}|{URI_START}(?:sips?:{lit}[^@;>?]*@|tel:{lit})")
        }
        (SigField::FromTo, SigMatch::Contains) => format!(
            "\"[^\"]*{lit}|[^\"<]*{lit}[^\"<]*<|{URI_START}(?:sips?:[^@;>?]*{lit}[^@;>?]*@|tel:[^;>?]*{lit})"
        ),
    }
}

/// Compiles the signatures in force (with their counter slots) into one bank.
pub fn compile(sigs: &[Signature]) -> Result<Compiled, CompileError> {
    // Per kernel field: (pattern, signature) pairs.
    let mut per_field: [Vec<(String, &Signature)>; field::COUNT] = Default::default();
    for s in sigs {
        let targets: &[usize] = match s.sig.field {
            SigField::UserAgent => &[field::USER_AGENT],
            SigField::FromTo => &[field::FROM, field::TO],
        };
        for &f in targets {
            per_field[f].push((pattern(s.sig.field, s.sig.matches, &s.sig.text), s));
        }
    }
    let mut dfas: Vec<Option<dense::DFA<Vec<u32>>>> = Vec::new();
    for pats in &per_field {
        if pats.is_empty() {
            dfas.push(None);
            continue;
        }
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .minimize(true)
                    .dfa_size_limit(Some(64 << 20))
                    .determinize_size_limit(Some(64 << 20)),
            )
            .syntax(syntax::Config::new().unicode(false).utf8(false).case_insensitive(true))
            .thompson(thompson::Config::new().utf8(false))
            .build_many(&pats.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>())
            .map_err(|e| CompileError::Build(e.to_string()))?;
        dfas.push(Some(dfa));
    }

    // Every state each automaton can reach from its start (by a byte or by the end of the
    // value), numbered from the start in the order found. The kernel rows are laid out in this
    // order, automaton after automaton, after the dead state 0.
    let mut reachable: Vec<Vec<StateID>> = Vec::new();
    let mut total = 1;
    for dfa in &dfas {
        let Some(dfa) = dfa else {
            reachable.push(Vec::new());
            continue;
        };
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| CompileError::Build(e.to_string()))?;
        let mut seen = std::collections::HashSet::from([start]);
        let mut order = vec![start];
        let mut k = 0;
        while k < order.len() {
            let s = order[k];
            k += 1;
            for n in (0..=255u8).map(|b| dfa.next_state(s, b)).chain([dfa.next_eoi_state(s)]) {
                if !dfa.is_dead_state(n) && seen.insert(n) {
                    order.push(n);
                }
            }
            if total + order.len() > DFA_STATES as usize {
                return Err(CompileError::TooManyStates(total + order.len()));
            }
        }
        total += order.len();
        reachable.push(order);
    }

    // Byte classes: two bytes are one class when every state of every automaton moves the
    // same way on both (so 'A' and 'a' are one class: the signatures ignore case).
    let mut head = DfaHead::default();
    let mut keys: std::collections::HashMap<Vec<u32>, usize> = std::collections::HashMap::new();
    let mut representative: Vec<u8> = Vec::new();
    for b in 0..=255u8 {
        let key: Vec<u32> = dfas
            .iter()
            .zip(&reachable)
            .filter_map(|(d, r)| d.as_ref().map(|d| (d, r)))
            .flat_map(|(d, r)| r.iter().map(move |&s| d.next_state(s, b).as_u32()))
            .collect();
        let next = keys.len();
        let class = *keys.entry(key).or_insert(next);
        if class == next {
            representative.push(b);
        }
        if class >= CLASS_EOI {
            return Err(CompileError::TooManyClasses(class + 1));
        }
        head.classes[usize::from(b)] = class as u8;
    }

    let mut rows = vec![DfaRow::default()]; // state 0: dead
    for (f, (dfa, order)) in dfas.iter().zip(&reachable).enumerate() {
        let Some(dfa) = dfa else { continue };
        let base = rows.len();
        let ids: std::collections::HashMap<StateID, u16> =
            order.iter().enumerate().map(|(i, &s)| (s, (base + i) as u16)).collect();
        let id = |s: StateID| if dfa.is_dead_state(s) { STATE_DEAD } else { ids[&s] };
        head.start[f] = id(order[0]);
        for &s in order {
            let mut row = DfaRow::default();
            for (class, &b) in representative.iter().enumerate() {
                row.next[class] = id(dfa.next_state(s, b));
            }
            row.next[CLASS_EOI] = id(dfa.next_eoi_state(s));
            // Enforcing signatures win; among equals, the oldest.
            let best = (0..if dfa.is_match_state(s) { dfa.match_len(s) } else { 0 })
                .map(|i| per_field[f][dfa.match_pattern(s, i).as_usize()].1)
                .min_by_key(|sig| (sig.sig.mode != SigMode::Enforce, sig.id));
            if let Some(sig) = best {
                row.slot = sig.slot;
                row.mode = match sig.sig.mode {
                    SigMode::Enforce => MODE_ENFORCE,
                    SigMode::DryRun => MODE_DRY_RUN,
                };
            }
            rows.push(row);
        }
    }
    Ok(Compiled { head, rows })
}

/// Lowest counter slot not in `used` (1 to `SLOTS - 1`).
pub fn free_slot(used: impl IntoIterator<Item = u16>) -> Option<u16> {
    let used: std::collections::HashSet<u16> = used.into_iter().collect();
    (1..SLOTS as u16).find(|s| !used.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(id: u32, field: SigField, matches: SigMatch, text: &str, mode: SigMode) -> Signature {
        Signature {
            id,
            sig: NewSignature { field, matches, text: text.into(), mode, comment: String::new() },
            slot: id as u16,
            origin: "operator".into(),
            created_at: Utc::now(),
        }
    }

    fn hit(c: &Compiled, f: usize, v: &str) -> (u8, u16) {
        let h = c.walk(f, v.as_bytes());
        (h.mode, h.slot)
    }

    #[test]
    fn user_agent_prefix_and_contains_ignore_case() {
        let c = compile(&[
            sig(1, SigField::UserAgent, SigMatch::Prefix, "friendly-scanner", SigMode::Enforce),
            sig(2, SigField::UserAgent, SigMatch::Contains, "ScanBot", SigMode::DryRun),
        ])
        .unwrap();
        let ua = field::USER_AGENT;
        assert_eq!(hit(&c, ua, "friendly-scanner"), (MODE_ENFORCE, 1));
        assert_eq!(hit(&c, ua, "Friendly-Scanner/0.3.8"), (MODE_ENFORCE, 1));
        assert_eq!(hit(&c, ua, "my friendly-scanner"), (MODE_NONE, 0), "prefix only");
        assert_eq!(hit(&c, ua, "x-SCANBOT-2"), (MODE_DRY_RUN, 2));
        assert_eq!(hit(&c, ua, "friendly-scanne"), (MODE_NONE, 0));
        assert_eq!(hit(&c, ua, "Yealink SIP-T46S 66.86.0.15"), (MODE_NONE, 0));
        assert_eq!(hit(&c, field::FROM, "friendly-scanner"), (MODE_NONE, 0), "other field");
    }

    #[test]
    fn from_to_name_and_user() {
        let c = compile(&[
            sig(1, SigField::FromTo, SigMatch::Prefix, "sipvicious", SigMode::Enforce),
            sig(2, SigField::FromTo, SigMatch::Contains, "evil", SigMode::Enforce),
        ])
        .unwrap();
        for f in [field::FROM, field::TO] {
            assert_eq!(hit(&c, f, "\"sipvicious\"<sip:100@198.18.0.1>;tag=63"), (MODE_ENFORCE, 1));
            assert_eq!(hit(&c, f, "sipvicious <sip:100@h>"), (MODE_ENFORCE, 1));
            assert_eq!(hit(&c, f, "\"SIPVicious\" <sip:1@h>"), (MODE_ENFORCE, 1));
            assert_eq!(hit(&c, f, "<sip:sipvicious1@h>"), (MODE_ENFORCE, 1), "user prefix");
            assert_eq!(hit(&c, f, "sips:sipvicious@h"), (MODE_ENFORCE, 1));
            assert_eq!(hit(&c, f, "\"Bob\" <sip:100@sipvicious.example>"), (MODE_NONE, 0), "host, not user");
            assert_eq!(hit(&c, f, "\"a very evil name\" <sip:1@h>"), (MODE_ENFORCE, 2));
            assert_eq!(hit(&c, f, "Mr Evil <sip:1@h>"), (MODE_ENFORCE, 2));
            assert_eq!(hit(&c, f, "<sip:1evil2@h>"), (MODE_ENFORCE, 2));
            assert_eq!(hit(&c, f, "<tel:+1evil;x=1>"), (MODE_ENFORCE, 2));
            assert_eq!(hit(&c, f, "<sip:100@evil.example>"), (MODE_NONE, 0), "host, not user");
            assert_eq!(hit(&c, f, "sip:100@evil.example"), (MODE_NONE, 0));
            assert_eq!(hit(&c, f, "\"Alice\" <sip:alice@pbx.example>;tag=1"), (MODE_NONE, 0));
            // Only the From/To URI's user: not a URI in a parameter or after the first one.
            assert_eq!(hit(&c, f, "<sip:100@h>;x=sip:sipvicious@h"), (MODE_NONE, 0), "parameter");
            assert_eq!(hit(&c, f, "sip:100@h;x=\"<sip:evil@h>\""), (MODE_NONE, 0), "parameter");
            assert_eq!(
                hit(&c, f, "\"A \\\"B\\\" C\" <sip:sipvicious@h>"),
                (MODE_ENFORCE, 1),
                "escaped quotes"
            );
            assert_eq!(hit(&c, f, "\"Bob\"\t<sips:xevilx@h>"), (MODE_ENFORCE, 2));
        }
        assert_eq!(hit(&c, field::USER_AGENT, "sipvicious"), (MODE_NONE, 0));
    }

    /// The kernel reads a From or To value in `<…>` form at most up to the end of its URI user
    /// (`@`): the automata die there, whatever follows (host, parameters, tag). A value without `<` is
    /// read to its end, since an unquoted display name (read leniently, as SIP servers do) may
    /// still be followed by one.
    #[test]
    fn from_to_walks_stop_at_the_end_of_the_uri_user() {
        let c = compile(&numbered_defaults()).unwrap();
        for (value, user_end) in [
            ("\"Front Desk\" <sip:201@pbx.example.com>;tag=1803316542", 22),
            ("<sip:+14155550100@pbx.example.com>", 18),
            ("Sales <sip:202@pbx.example.com>;tag=x", 15),
            ("sip:204@pbx.example.com;tag=x", 29), // all of it
        ] {
            for f in [field::FROM, field::TO] {
                let mut read = 0;
                let hit = callguard_common::sig::walk(
                    &c.head,
                    c.head.start[f],
                    |k| {
                        read = read.max(k + 1);
                        value.as_bytes()[k]
                    },
                    value.len(),
                    callguard_common::sip::FIELD_MAX,
                    |s, class| c.rows[usize::from(s)].next[class],
                    |s| (c.rows[usize::from(s)].mode, c.rows[usize::from(s)].slot),
                );
                assert_eq!(hit.mode, MODE_NONE, "{value}");
                assert!(read <= user_end, "{value}: read {read} bytes, more than {user_end}");
            }
        }
    }

    /// What a bank holds, as the README states it: three `from-to` `contains` signatures beside
    /// the shipped set fit, a fourth is refused with the count.
    #[test]
    fn a_bank_holds_the_shipped_set_and_three_from_to_contains_signatures() {
        let mut sigs = numbered_defaults();
        for i in 0..4 {
            let n = sigs.len() as u32 + 1;
            sigs.push(sig(
                n,
                SigField::FromTo,
                SigMatch::Contains,
                &format!("scanner{i}x"),
                SigMode::Enforce,
            ));
            let c = compile(&sigs);
            if i < 3 {
                assert!(c.is_ok(), "{} signatures: {:?}", sigs.len(), c.err());
            } else {
                let e = c.expect_err("a fourth must not fit").to_string();
                assert!(e.starts_with("the signatures need") && e.ends_with("the kernel holds 4095"), "{e}");
            }
        }
    }

    #[test]
    fn enforce_wins_over_dry_run_and_dry_run_alone_counts() {
        let c = compile(&[
            sig(1, SigField::UserAgent, SigMatch::Prefix, "abc", SigMode::DryRun),
            sig(2, SigField::UserAgent, SigMatch::Contains, "abcdef", SigMode::Enforce),
        ])
        .unwrap();
        assert_eq!(hit(&c, field::USER_AGENT, "abcdef"), (MODE_ENFORCE, 2));
        assert_eq!(hit(&c, field::USER_AGENT, "abcxyz"), (MODE_DRY_RUN, 1));
    }

    #[test]
    fn the_default_set_compiles_small_and_catches_sipvicious() {
        let c = compile(&numbered_defaults()).unwrap();
        assert!(c.rows.len() < 512, "{} states", c.rows.len());
        assert_eq!(hit(&c, field::USER_AGENT, "friendly-scanner").0, MODE_ENFORCE);
        assert_eq!(hit(&c, field::FROM, "\"sipvicious\"<sip:100@1.1.1.1>").0, MODE_ENFORCE);
        assert_eq!(hit(&c, field::USER_AGENT, "sipsak 0.9.8").0, MODE_DRY_RUN);
        for legit in [
            "Zoiper rv2.10.20.2",
            "Linphone/5.2.5 (belle-sip/5.2.4)",
            "Asterisk PBX 20.5.0",
            "Grandstream GXP2170 1.0.11.23",
            "MicroSIP/3.21.3",
            "FPBX-16.0.40(18.20.2)",
        ] {
            assert_eq!(hit(&c, field::USER_AGENT, legit).0, MODE_NONE, "{legit}");
        }
    }

    #[test]
    fn every_letter_and_digit_still_fits_the_class_table() {
        let mut sigs = Vec::new();
        for (i, text) in ["abcdefghijklm", "nopqrstuvwxyz", "0123456789", "-_./:+()[]!~*'"].iter().enumerate()
        {
            let f = if i % 2 == 0 { SigField::UserAgent } else { SigField::FromTo };
            sigs.push(sig(i as u32 + 1, f, SigMatch::Contains, text, SigMode::Enforce));
        }
        let c = compile(&sigs).unwrap();
        assert_eq!(hit(&c, field::USER_AGENT, "x-ABCDEFGHIJKLM"), (MODE_ENFORCE, 1));
        assert_eq!(hit(&c, field::TO, "\"NOPQRSTUVWXYZ\" <sip:1@h>"), (MODE_ENFORCE, 2));
    }

    #[test]
    fn bad_text_is_refused() {
        let mut s = defaults().remove(0);
        s.text = String::new();
        assert!(s.validate().is_err());
        s.text = "a\tb".into();
        assert!(s.validate().unwrap_err().contains("0x09"));
        s.text = "x".repeat(TEXT_MAX + 1);
        assert!(s.validate().is_err());
    }
}
