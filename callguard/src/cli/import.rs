//! Reading address lists for `callguard net import`.
//!
//! Accepted, in one file or mixed: what [`crate::feeds::list_entry`] reads (addresses and
//! prefixes a line, FireHOL netsets, `ipset save` output), the blocklist feeds' line formats.
//!
//! Parsing stops at the first bad line and names it; the caller then applies nothing.

use std::io::BufRead;

use ipnet::IpNet;

use crate::feeds::list_entry;

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
        if let Some(net) = list_entry(&line).map_err(|message| BadLine { line: i + 1, message })? {
            out.push(net);
        }
    }
    progress(read);
    Ok(out)
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
        assert!(list_entry("198.18.0.1-198.18.0.9").unwrap_err().contains("range"));
        assert!(list_entry("198.18.0.1 extra").is_err());
        assert!(list_entry("198.18.0.1/24").unwrap_err().contains("host bits"));
    }
}
