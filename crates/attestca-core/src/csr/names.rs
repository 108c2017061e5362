//! The syntax of the strings the CA copies from a CSR into a certificate: subject attribute
//! text, dNSName, rfc822Name and uniformResourceIdentifier.
//!
//! Each check is a pure function of the string and loops at most once over it (the strings
//! are bounded by the request body limit and, before these run, by the length bounds in
//! `csr.rs`). A refusal says which rule failed and names an offending character by its code
//! point, never by echoing it: the explanation goes into a response body and the logs.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest dNSName (RFC 1035: 255 octets on the wire, 253 as text).
pub(super) const MAX_DNS_NAME: usize = 253;
/// The longest rfc822Name: RFC 5321's 256-octet path less its angle brackets.
pub(super) const MAX_MAILBOX: usize = 254;
/// The longest local part of a mailbox (RFC 5321 4.5.3.1.1).
pub(super) const MAX_LOCAL_PART: usize = 64;
/// The longest URI attestca copies: no RFC bound; a device identity URI is short.
pub(super) const MAX_URI: usize = 1024;

/// A character that must not appear in a name the CA signs, and why; `None` if `c` is fine.
///
/// Refused: control characters (C0, DEL, C1), the bidirectional formatting characters
/// (embeddings, overrides, isolates and marks: they make a name display as another),
/// invisible characters that make two names look alike (soft hyphen, zero-width space, word
/// joiner and invisible operators, byte-order mark, interlinear annotation), the line and
/// paragraph separators, noncharacters, and private-use code points (no agreed meaning).
/// Zero-width joiner and non-joiner stay allowed: several scripts need them.
pub(super) fn forbidden_character(c: char) -> Option<&'static str> {
    let cp = u32::from(c);
    if c.is_control() {
        return Some("a control character");
    }
    match cp {
        0x061C | 0x200E | 0x200F | 0x202A..=0x202E | 0x2066..=0x2069 => {
            Some("a bidirectional formatting character")
        }
        0x00AD | 0x200B | 0x2060..=0x2064 | 0xFEFF | 0xFFF9..=0xFFFB | 0xE0000..=0xE007F => {
            Some("an invisible formatting character")
        }
        0x2028 | 0x2029 => Some("a line or paragraph separator"),
        0xFDD0..=0xFDEF => Some("a noncharacter"),
        _ if cp & 0xFFFE == 0xFFFE => Some("a noncharacter"),
        0xE000..=0xF8FF | 0xF_0000..=0x10_FFFF => Some("a private-use character"),
        _ => None,
    }
}

/// The first forbidden character of `text`, as `U+XXXX (why)`.
pub(super) fn first_forbidden(text: &str) -> Option<String> {
    text.chars()
        .find_map(|c| forbidden_character(c).map(|why| format!("U+{:04X} ({why})", u32::from(c))))
}

/// Whether `c` is in the PrintableString alphabet (X.680 41.4):
/// `A-Z a-z 0-9 space ' ( ) + , - . / : = ?`.
pub(super) fn is_printable_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            ' ' | '\'' | '(' | ')' | '+' | ',' | '-' | '.' | '/' | ':' | '=' | '?'
        )
}

/// A DNS name in preferred syntax (RFC 1034 3.5, RFC 1123 2.1) as RFC 5280 4.2.1.6 wants a
/// dNSName: letters, digits and hyphens in labels of 1 to 63 characters that neither start nor
/// end with a hyphen, at most 253 characters, at least two labels, no trailing dot, no
/// wildcard. The last label (a top-level domain) is at least two characters and ends with a
/// letter, so that an IP address written as text is never taken for a DNS name (pkilint's
/// check, python `validators.domain`, asks the same). Labels with hyphens in the third and
/// fourth positions are reserved (RFC 5891 4.2.3.1) unless they are A-labels (`xn--`), which
/// are accepted as they are written (not decoded).
pub(super) fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > MAX_DNS_NAME || !name.contains('.') {
        return false;
    }
    let labels_ok = name.split('.').all(|label| {
        let bytes = label.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 63
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes.first() != Some(&b'-')
            && bytes.last() != Some(&b'-')
            && (bytes.get(2..4) != Some(b"--".as_slice())
                || bytes
                    .get(..2)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"xn")))
    });
    let tld_ok = name
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.len() >= 2 && tld.ends_with(|c: char| c.is_ascii_alphabetic()));
    labels_ok && tld_ok
}

/// A mailbox as RFC 5280 4.2.1.6 wants an rfc822Name (RFC 5321 4.1.2 `Mailbox`): a local part
/// in dot-atom form (quoted strings are refused) of at most 64 characters, `@`, and a domain
/// that [`is_dns_name`] (address literals are refused).
pub(super) fn is_mailbox(mailbox: &str) -> bool {
    if mailbox.len() > MAX_MAILBOX {
        return false;
    }
    let Some((local, domain)) = mailbox.split_once('@') else {
        return false;
    };
    let is_atext = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '!' | '#'
                    | '$'
                    | '%'
                    | '&'
                    | '\''
                    | '*'
                    | '+'
                    | '-'
                    | '/'
                    | '='
                    | '?'
                    | '^'
                    | '_'
                    | '`'
                    | '{'
                    | '|'
                    | '}'
                    | '~'
            )
    };
    !local.is_empty()
        && local.len() <= MAX_LOCAL_PART
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
        && is_dns_name(domain)
}

/// Whether `c` may appear, as itself, in a URI's path, query or fragment (RFC 3986 `pchar`,
/// `/` and `?`; `%` is checked separately).
fn is_uri_text_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | ';'
                | '='
                | ':'
                | '@'
                | '/'
                | '?'
        )
}

/// Path, query or fragment text: [`is_uri_text_char`] characters and `%` followed by two
/// hexadecimal digits.
fn is_uri_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3);
                if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
            }
            b if is_uri_text_char(char::from(b)) => i += 1,
            _ => return false,
        }
    }
    true
}

/// A URI authority as RFC 5280 4.2.1.6 wants it: a host that is a fully qualified domain name
/// ([`is_dns_name`]), a dotted IPv4 address or a bracketed IPv6 address, and an optional port.
/// User information is refused (a certificate is no place for credentials).
fn is_uri_authority(authority: &str) -> bool {
    if authority.contains('@') {
        return false;
    }
    let (host_ok, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((literal, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            p => match p.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (literal.parse::<Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        (is_dns_name(host) || host.parse::<Ipv4Addr>().is_ok(), port)
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && {
            p.parse::<u32>().is_ok_and(|n| n <= 65_535)
        }
    });
    host_ok && port_ok
}

/// An absolute URI (RFC 3986 4.3) as RFC 5280 4.2.1.6 wants a uniformResourceIdentifier: a
/// scheme (a letter, then letters, digits, `+`, `-`, `.`), `:`, a non-empty scheme-specific
/// part; printable ASCII only, no spaces, `%` only as a percent-encoding; when there is an
/// authority (`//`), its host is a fully qualified domain name or an IP address. At most
/// [`MAX_URI`] characters.
pub(super) fn is_uri(uri: &str) -> bool {
    if uri.is_empty() || uri.len() > MAX_URI || !uri.is_ascii() {
        return false;
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return false;
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || rest.is_empty() {
        return false;
    }
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (hier, query) = match rest.split_once('?') {
        Some((hier, query)) => (hier, Some(query)),
        None => (rest, None),
    };
    if hier.is_empty() {
        return false;
    }
    let path = match hier.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            if !is_uri_authority(authority) {
                return false;
            }
            path
        }
        None => hier,
    };
    is_uri_text(path) && query.is_none_or(is_uri_text) && fragment.is_none_or(is_uri_text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_characters() {
        for c in [
            '\0',
            '\t',
            '\n',
            '\r',
            '\x1b',
            '\x7f',
            '\u{85}',
            '\u{9f}',
            '\u{202e}',
            '\u{2066}',
            '\u{200f}',
            '\u{061c}',
            '\u{feff}',
            '\u{200b}',
            '\u{ad}',
            '\u{2028}',
            '\u{fdd0}',
            '\u{fffe}',
            '\u{1ffff}',
            '\u{e000}',
            '\u{10fffd}',
            '\u{e0041}',
        ] {
            assert!(forbidden_character(c).is_some(), "U+{:04X}", u32::from(c));
        }
        for c in [
            'a', ' ', 'é', 'ß', 'Ж', '中', '\u{200d}', '\u{200c}', '😀', '\u{fe0f}',
        ] {
            assert!(forbidden_character(c).is_none(), "U+{:04X}", u32::from(c));
        }
        assert_eq!(
            first_forbidden("dev\r\nX").as_deref(),
            Some("U+000D (a control character)")
        );
    }

    #[test]
    fn printable_string_alphabet() {
        assert!(
            "Acme Ltd. (Line 2) +1, a/b:c=d?'"
                .chars()
                .all(is_printable_char)
        );
        for c in ['*', '@', '&', '_', '!', '"', ';', '<', '#', '\0', 'é'] {
            assert!(!is_printable_char(c), "{c:?}");
        }
    }

    #[test]
    fn dns_names() {
        for good in [
            "dev-1.example",
            "a.b.example.com",
            "DEV1.Example.COM",
            "1dev.example",
            "xn--bcher-kva.example",
            "x.xn--p1ai",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        let long_label = format!("{}.example", "a".repeat(64));
        let long_name = format!("{}.example", vec!["a".repeat(63); 4].join("."));
        for bad in [
            "",
            "localhost",
            "dev.example.",
            ".dev.example",
            "a..example",
            "-dev.example",
            "dev-.example",
            "*.example.com",
            "dev_1.example",
            "dev 1.example",
            "dev\0.example",
            "10.0.0.7",
            "dev.x",
            "dev.co1",
            "ab--cd.example",
            "dév.example",
            &long_label,
            &long_name,
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn mailboxes() {
        for good in [
            "a@example.com",
            "first.last+tag@mail.example",
            "o'hara@x.example",
        ] {
            assert!(is_mailbox(good), "{good}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        for bad in [
            "",
            "a",
            "@example.com",
            "a@",
            "a@b@example.com",
            "a@localhost",
            "a.@example.com",
            ".a@example.com",
            "a..b@example.com",
            "\"a b\"@example.com",
            "a b@example.com",
            "a@[10.0.0.1]",
            "a\r\n@example.com",
            &long_local,
        ] {
            assert!(!is_mailbox(bad), "{bad:?}");
        }
    }

    #[test]
    fn uris() {
        for good in [
            "https://device.example.com/id/42",
            "https://device.example.com:8443/a%20b?x=1&y=2#frag",
            "http://10.0.0.7/",
            "https://[2001:db8::1]:443/x",
            "urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
            "spiffe://trust.example/device/42",
            "urn:dev:ops:32473-Refrigerator-5002",
        ] {
            assert!(is_uri(good), "{good}");
        }
        let long = format!("https://a.example/{}", "a".repeat(MAX_URI));
        for bad in [
            "",
            "no-scheme",
            "/relative/path",
            "1http://a.example/",
            "http:",
            "urn:?q",
            "urn:#f",
            "http://",
            "http:///path",
            "http://localhost/",
            "http://user:pw@a.example/",
            "http://a.example:99999/",
            "http://a.example:/",
            "http://[::1/",
            "http://[v1.x]/",
            "https://a.example/a b",
            "https://a.example/a\0b",
            "https://a.example/a\r\nb",
            "https://a.example/%zz",
            "https://a.example/%4",
            "https://a.example/<script>",
            "https://a.example/a\\b",
            "https://a.example/ä",
            "https://a.example/#a#b",
            "https://a.example/[x]",
            &long,
        ] {
            assert!(!is_uri(bad), "{bad:?}");
        }
    }
}
