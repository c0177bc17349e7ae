//! The PROXY protocol parser and encoders against the specification's
//! examples, malformed headers, every truncation, and random input.

use super::*;
use proptest::prelude::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn proxied(source: &str, destination: &str) -> Header {
    Header::Proxied {
        source: addr(source),
        destination: addr(destination),
    }
}

fn v1(source: &str, destination: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_v1(addr(source), addr(destination), &mut out);
    out
}

fn v2(source: &str, destination: &str) -> Vec<u8> {
    let mut out = Vec::new();
    encode_v2(addr(source), addr(destination), &mut out);
    out
}

/// A v2 header with the given version/command and family bytes and
/// address block.
fn v2_raw(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(version_command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
    out.extend_from_slice(block);
    out
}

fn complete(buf: &[u8]) -> (Header, usize) {
    match parse(buf) {
        Ok(Parse::Complete { header, consumed }) => (header, consumed),
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

/// Valid headers of every kind, with what they parse to.
fn valid_headers() -> Vec<(Vec<u8>, Header)> {
    let long_v6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    vec![
        (
            b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n".to_vec(),
            proxied("192.0.2.1:56324", "198.51.100.2:443"),
        ),
        (
            b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n".to_vec(),
            proxied("0.0.0.0:0", "255.255.255.255:65535"),
        ),
        (
            b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n".to_vec(),
            proxied("[2001:db8::1]:1", "[::ffff:192.0.2.1]:2"),
        ),
        (
            format!("PROXY TCP6 {long_v6} 1:2:3:4:5:6:7:8 12 3\r\n").into_bytes(),
            proxied(&format!("[{long_v6}]:12"), "[1:2:3:4:5:6:7:8]:3"),
        ),
        (
            b"PROXY TCP6 :: 0000:00:0::1.2.3.4 80 8080\r\n".to_vec(),
            proxied("[::]:80", "[::1.2.3.4]:8080"),
        ),
        (b"PROXY UNKNOWN\r\n".to_vec(), Header::Local),
        (
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n".to_vec(),
            Header::Local,
        ),
        (
            v1("192.0.2.1:1000", "192.0.2.2:2000"),
            proxied("192.0.2.1:1000", "192.0.2.2:2000"),
        ),
        (
            v2("192.0.2.1:1000", "192.0.2.2:2000"),
            proxied("192.0.2.1:1000", "192.0.2.2:2000"),
        ),
        (
            v2("[2001:db8::1]:1000", "[2001:db8::2]:2000"),
            proxied("[2001:db8::1]:1000", "[2001:db8::2]:2000"),
        ),
        (v2_raw(0x20, 0x00, &[]), Header::Local),
        (v2_raw(0x20, 0x11, &[7; 12]), Header::Local),
        (v2_raw(0x20, 0x12, &[7; 5]), Header::Local),
        (v2_raw(0x20, 0xff, &[]), Header::Local),
        (v2_raw(0x21, 0x00, &[1, 2, 3]), Header::Local),
        (
            // TCP4 with a 3-byte TLV after the addresses.
            v2_raw(
                0x21,
                0x11,
                &[192, 0, 2, 1, 192, 0, 2, 2, 0, 80, 1, 187, 0x04, 0, 0],
            ),
            proxied("192.0.2.1:80", "192.0.2.2:443"),
        ),
        (
            v2_raw(0x21, 0x11, &[0; V2_MAX_ADDRESS_LEN]),
            proxied("0.0.0.0:0", "0.0.0.0:0"),
        ),
    ]
}

#[test]
fn round_trips_v1_and_v2_for_ipv4_and_ipv6() {
    for (source, destination) in [
        ("192.0.2.1:56324", "198.51.100.2:443"),
        ("[2001:db8::1]:1", "[2001:db8:0:0:1::ffff]:65535"),
        ("[::ffff:192.0.2.1]:0", "[::1]:22"),
    ] {
        for buf in [v1(source, destination), v2(source, destination)] {
            assert_eq!(complete(&buf), (proxied(source, destination), buf.len()));
        }
    }
}

#[test]
fn encodes_the_spec_examples() {
    assert_eq!(
        v1("192.0.2.1:56324", "198.51.100.2:443"),
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"
    );
    assert_eq!(
        v1("[2001:db8::1]:1", "[::ffff:192.0.2.1]:2"),
        b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2\r\n"
    );
    let mut expected = V2_SIGNATURE.to_vec();
    expected.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 1, 198, 51, 100, 2]);
    expected.extend_from_slice(&[0xdc, 0x04, 0x01, 0xbb]);
    assert_eq!(v2("192.0.2.1:56324", "198.51.100.2:443"), expected);
    let buf = v2("[::1]:1", "[::2]:2");
    assert_eq!(&buf[12..16], &[0x21, 0x21, 0, 36]);
    assert_eq!(buf.len(), 16 + 36);
}

#[test]
fn mixed_families_are_encoded_as_ipv4_mapped_ipv6() {
    let expected = proxied("[::ffff:192.0.2.1]:1", "[2001:db8::2]:2");
    for buf in [
        v1("192.0.2.1:1", "[2001:db8::2]:2"),
        v2("192.0.2.1:1", "[2001:db8::2]:2"),
    ] {
        assert_eq!(complete(&buf).0, expected);
    }
    assert_eq!(
        v1("[2001:db8::1]:1", "192.0.2.2:2"),
        b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.2 1 2\r\n"
    );
}

#[test]
fn ipv4_mapped_addresses_are_sent_in_their_ipv4_form() {
    // A dual-stack `[::]` listener reports an IPv4 client and the address
    // it connected to as IPv4-mapped IPv6.
    let (client, listener) = ("[::ffff:127.0.0.1]:40000", "[::ffff:127.0.0.1]:8080");
    assert_eq!(
        v1(client, listener),
        b"PROXY TCP4 127.0.0.1 127.0.0.1 40000 8080\r\n"
    );
    let expected = proxied("127.0.0.1:40000", "127.0.0.1:8080");
    assert_eq!(complete(&v2(client, listener)).0, expected);
    // One mapped and one IPv6 address: both IPv6, the IPv4 one mapped.
    assert_eq!(
        v1("[::ffff:192.0.2.1]:1", "[2001:db8::2]:2"),
        b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n"
    );
}

#[test]
fn encoders_append() {
    let mut out = b"x".to_vec();
    Version::V1.encode(addr("1.2.3.4:5"), addr("6.7.8.9:10"), &mut out);
    Version::V2.encode(addr("1.2.3.4:5"), addr("6.7.8.9:10"), &mut out);
    let (header, v1_len) = complete(&out[1..]);
    assert_eq!(header, proxied("1.2.3.4:5", "6.7.8.9:10"));
    assert_eq!(
        complete(&out[1 + v1_len..]),
        (header, out.len() - 1 - v1_len)
    );
}

#[test]
fn every_proper_prefix_of_a_valid_header_is_incomplete() {
    for (buf, _) in valid_headers() {
        for end in 0..buf.len() {
            assert_eq!(
                parse(&buf[..end]),
                Ok(Parse::Incomplete),
                "{:?}",
                String::from_utf8_lossy(&buf[..end])
            );
        }
    }
}

#[test]
fn a_header_followed_by_payload_consumes_only_the_header() {
    for (buf, header) in valid_headers() {
        for payload in [&b""[..], b"\r\n", b"GET / HTTP/1.1\r\n\r\n", &[0; 4000]] {
            let mut input = buf.clone();
            input.extend_from_slice(payload);
            assert_eq!(complete(&input), (header, buf.len()));
        }
    }
    // The payload may itself look like a header.
    let mut input = v1("1.2.3.4:5", "6.7.8.9:10");
    let first = input.len();
    input.extend_from_slice(&v2("[::1]:1", "[::2]:2"));
    assert_eq!(complete(&input).1, first);
}

#[test]
fn v1_length_limit_includes_the_crlf() {
    let long_v6 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
    let longest = format!("PROXY TCP6 {long_v6} {} 1 1\r\n", &long_v6[..44]);
    assert_eq!(longest.len(), V1_MAX_LEN);
    assert_eq!(complete(longest.as_bytes()).1, V1_MAX_LEN);
    let over = format!("PROXY TCP6 {long_v6} {long_v6} 1 1\r\n");
    assert_eq!(over.len(), V1_MAX_LEN + 1);
    assert_eq!(
        parse(&over.as_bytes()[..V1_MAX_LEN - 1]),
        Ok(Parse::Incomplete)
    );
    assert_eq!(parse(over.as_bytes()), Err(ProxyHeaderError::TooLong));
    assert_eq!(
        parse(&over.as_bytes()[..V1_MAX_LEN]),
        Err(ProxyHeaderError::TooLong)
    );

    let mut unknown = b"PROXY UNKNOWN ".to_vec();
    unknown.resize(V1_MAX_LEN - 2, b'x');
    unknown.extend_from_slice(b"\r\n");
    assert_eq!(complete(&unknown), (Header::Local, V1_MAX_LEN));
    unknown.insert(20, b'x');
    assert_eq!(parse(&unknown), Err(ProxyHeaderError::TooLong));
    assert_eq!(
        parse(&unknown[..V1_MAX_LEN]),
        Err(ProxyHeaderError::TooLong)
    );
    assert_eq!(parse(&unknown[..V1_MAX_LEN - 1]), Ok(Parse::Incomplete));
}

#[test]
fn malformed_v1_headers_are_errors() {
    let mut no_crlf = b"PROXY UNKNOWN ".to_vec();
    no_crlf.resize(200, b'x');
    let cases: &[(&str, &[u8])] = &[
        // Neither "PROXY " nor the v2 signature: rejected at once.
        ("not_proxy_protocol", b"GET / HTTP/1.1\r\n\r\n"),
        ("not_proxy_protocol", b"G"),
        ("not_proxy_protocol", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        ("not_proxy_protocol", b"PROXYTCP4"),
        ("not_proxy_protocol", b"\x16\x03\x01\x00"),
        ("not_proxy_protocol", b"\r\nGET"),
        ("not_proxy_protocol", b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\x0c"),
        // Protocol, spaces and line end.
        ("v1_syntax", b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n"),
        ("v1_syntax", b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        ("v1_syntax", b"PROXY TCP44 1.2.3.4"),
        ("v1_syntax", b"PROXY UNKNOWNX\r\n"),
        ("v1_syntax", b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n"),
        ("v1_syntax", b"PROXY TCP4  "),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"),
        ("v1_syntax", b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4\r\n"),
        ("v1_syntax", b"PROXY TCP4\r\n"),
        ("v1_syntax", b"PROXY \r\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
        ("v1_syntax", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
        ("v1_syntax", b"PROXY UNKNOWN\n"),
        ("v1_syntax", b"PROXY UNKNOWN\r\r\n"),
        // Addresses of the wrong family or not addresses at all.
        ("v1_address", b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n"),
        ("v1_address", b"PROXY TCP4 ::"),
        ("v1_address", b"PROXY TCP4 1.2.3.4 ::ffff:5.6.7.8 1 2\r\n"),
        ("v1_address", b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n"),
        ("v1_address", b"PROXY TCP6 1."),
        ("v1_address", b"PROXY TCP4 1.2.3.256"),
        ("v1_address", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
        ("v1_address", b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"),
        ("v1_address", b"PROXY TCP4 1.2.3.4.5"),
        ("v1_address", b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n"),
        ("v1_address", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"),
        ("v1_address", b"PROXY TCP6 [::1] ::1 1 2\r\n"),
        ("v1_address", b"PROXY TCP6 1::2::"),
        ("v1_address", b"PROXY TCP6 1:2:3:4:5:6:7:8:"),
        ("v1_address", b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"),
        ("v1_address", b"PROXY TCP6 1:2:3:4:5:6:7::8"),
        ("v1_address", b"PROXY TCP6 12345"),
        ("v1_address", b"PROXY TCP6 :::"),
        ("v1_address", b"PROXY TCP6 1:2 ::1 1 2\r\n"),
        // Ports.
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 100000"),
        ("v1_port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n"),
        // No CRLF within 107 bytes.
        ("too_long", &no_crlf),
    ];
    for &(reason, buf) in cases {
        assert_error(buf, reason);
    }
}

#[test]
fn malformed_v2_headers_are_errors() {
    let v4 = [192, 0, 2, 1, 192, 0, 2, 2, 0, 80, 1, 187];
    let mut too_long = v2_raw(0x21, 0x11, &[0; V2_MAX_ADDRESS_LEN + 1]);
    too_long.truncate(V2_FIXED_LEN);
    let mut longest_length = v2_raw(0x20, 0x00, &[]);
    longest_length[14..16].copy_from_slice(&[0xff, 0xff]);
    let partial = |rest: &[u8]| [&V2_SIGNATURE[..], rest].concat();
    let cases = [
        ("v2_version", v2_raw(0x11, 0x11, &v4)),
        ("v2_version", v2_raw(0x31, 0x11, &v4)),
        ("v2_version", partial(b"\x01")),
        ("v2_command", v2_raw(0x23, 0x11, &v4)),
        ("v2_command", v2_raw(0x2f, 0x00, &[])),
        ("v2_command", partial(b"\x22")),
        ("v2_address_too_short", v2_raw(0x21, 0x11, &v4[..11])),
        ("v2_address_too_short", v2_raw(0x21, 0x11, &[])),
        ("v2_address_too_short", v2_raw(0x21, 0x21, &[0; 35])),
        ("v2_address_too_short", v2_raw(0x21, 0x21, &v4)),
        ("unsupported", v2_raw(0x21, 0x12, &v4)),
        ("unsupported", v2_raw(0x21, 0x22, &[0; 36])),
        ("unsupported", v2_raw(0x21, 0x31, &[0; 216])),
        ("unsupported", v2_raw(0x21, 0x32, &[0; 216])),
        ("unsupported", v2_raw(0x21, 0x01, &[])),
        ("unsupported", v2_raw(0x21, 0x10, &v4)),
        ("unsupported", partial(b"\x21\x41")),
        ("too_long", too_long),
        ("too_long", longest_length),
    ];
    for (reason, buf) in cases {
        assert_error(&buf, reason);
    }
}

fn assert_error(buf: &[u8], reason: &str) {
    match parse(buf) {
        Err(e) => assert_eq!(
            e.reason(),
            reason,
            "{:?}: {e}",
            String::from_utf8_lossy(buf)
        ),
        Ok(p) => panic!("{:?}: {p:?}", String::from_utf8_lossy(buf)),
    }
}

#[test]
fn errors_have_distinct_snake_case_reasons_and_messages() {
    let errors = [
        ProxyHeaderError::NotProxyProtocol,
        ProxyHeaderError::V1Syntax("x"),
        ProxyHeaderError::V1Address { family: "TCP4" },
        ProxyHeaderError::V1Port,
        ProxyHeaderError::V2Version(1),
        ProxyHeaderError::V2Command(3),
        ProxyHeaderError::V2AddressTooShort { len: 1, need: 12 },
        ProxyHeaderError::Unsupported(0x12),
        ProxyHeaderError::TooLong,
    ];
    let mut reasons: Vec<_> = errors.iter().map(ProxyHeaderError::reason).collect();
    for reason in &reasons {
        assert!(reason
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()));
    }
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), errors.len());
    assert_eq!(
        ProxyHeaderError::Unsupported(0x12).to_string(),
        "PROXY v2 header proxies family/protocol 0x12; only TCP over IPv4 or IPv6 is supported"
    );
    assert_eq!(
        ProxyHeaderError::V1Address { family: "TCP4" }.to_string(),
        "malformed PROXY v1 header: invalid TCP4 address"
    );
}

#[test]
fn version_parses_and_displays() {
    for (text, version) in [("v1", Version::V1), ("v2", Version::V2)] {
        assert_eq!(text.parse::<Version>(), Ok(version));
        assert_eq!(version.to_string(), text);
    }
    for bad in ["", "V1", "1", "v3", " v1", "v1 "] {
        assert_eq!(bad.parse::<Version>(), Err(ParseVersionError));
    }
}

#[test]
fn ipv6_scan_agrees_with_std_exhaustively_on_short_text() {
    // Every string of up to 7 bytes over an alphabet that reaches every
    // scan state except the group limits (which the proptest below covers).
    let alphabet = b"0:1.f2x";
    let mut text = Vec::new();
    let mut count = 0;
    for len in 0..=7u32 {
        for mut n in 0..alphabet.len().pow(len) {
            text.clear();
            for _ in 0..len {
                text.push(alphabet[n % alphabet.len()]);
                n /= alphabet.len();
            }
            check_ipv6_scan(&text);
            count += 1;
        }
    }
    assert!(count > 900_000);
}

/// The scan accepts exactly what std parses, and every prefix of it.
fn check_ipv6_scan(text: &[u8]) {
    let std_ok = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<Ipv6Addr>().ok())
        .is_some();
    let scan = ipv6_scan(text);
    assert_eq!(
        scan.is_some_and(Ipv6Scan::is_complete),
        std_ok,
        "{:?}",
        String::from_utf8_lossy(text)
    );
    if std_ok {
        for end in 0..text.len() {
            assert!(
                ipv6_scan(&text[..end]).is_some(),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }
}

/// The same for dotted quads.
fn check_ipv4_scan(text: &[u8]) {
    let std_ok = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .is_some();
    let scan = ipv4_scan(text);
    assert_eq!(
        scan.is_some_and(Ipv4Scan::is_complete),
        std_ok,
        "{:?}",
        String::from_utf8_lossy(text)
    );
    if std_ok {
        for end in 0..text.len() {
            assert!(ipv4_scan(&text[..end]).is_some());
        }
    }
}

/// Text built from pieces of IPv6 and IPv4 syntax, mostly almost valid.
fn address_like_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[0-9a-fA-F]{1,5}",
        Just(":".to_owned()),
        Just("::".to_owned()),
        Just(".".to_owned()),
        "(0|00|1|12|255|256|01)",
        "(0|1|255|256)\\.(0|1|255)\\.(0|1|255|256)\\.(0|1|255|01)",
    ];
    prop::collection::vec(piece, 0..18).prop_map(|pieces| pieces.concat())
}

/// Text that looks like a dotted quad, valid or not.
fn dotted_like_text() -> impl Strategy<Value = String> {
    "((0|00|01|1|9|10|99|100|199|249|255|256|300|999|1000)\\.){0,4}(0|00|01|1|99|255|256|1000)?"
}

/// Valid IPv6 text in every form: eight groups, or fewer around a `::`
/// anywhere, hex digits in either case, with or without leading zeros,
/// the last two groups written as hex or as a dotted quad.
fn ipv6_text() -> impl Strategy<Value = String> {
    let shape = (
        0..=8usize,
        0..=8usize,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    );
    (any::<[u16; 8]>(), shape).prop_map(|(groups, (head, tail, dotted, pad, upper))| {
        let hex = |gs: &[u16]| -> Vec<String> {
            gs.iter()
                .map(|g| match (pad, upper) {
                    (false, false) => format!("{g:x}"),
                    (false, true) => format!("{g:X}"),
                    (true, false) => format!("{g:04x}"),
                    (true, true) => format!("{g:04X}"),
                })
                .collect()
        };
        // Groups that run to the end, the last two as a dotted quad
        // when asked for.
        let render = |mut parts: Vec<String>| {
            if dotted && parts.len() >= 2 {
                parts.truncate(parts.len() - 2);
                let v4 = (u32::from(groups[6]) << 16) | u32::from(groups[7]);
                parts.push(Ipv4Addr::from(v4).to_string());
            }
            parts.join(":")
        };
        if head + tail > 7 {
            return render(hex(&groups));
        }
        let head_text = hex(&groups[..head]).join(":");
        if tail == 0 {
            return format!("{head_text}::");
        }
        format!("{head_text}::{}", render(hex(&groups[8 - tail..])))
    })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::new(
            IpAddr::V6(Ipv4Addr::from(ip).to_ipv6_mapped()),
            port
        )),
    ]
}

/// Bytes that start like a header, to reach past the first checks.
fn header_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(Vec::new()),
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY TCP6 ".to_vec()),
        Just(b"PROXY UNKNOWN".to_vec()),
        Just(V2_SIGNATURE.to_vec()),
        Just(b"\r\n\r\n\0\r\nQUIT\n\x21\x11".to_vec()),
        Just(b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec()),
    ];
    let tail = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(
            prop::sample::select(b"0123456789abcdef:. \r\n".to_vec()),
            0..120
        ),
    ];
    (start, tail).prop_map(|(mut start, tail)| {
        start.extend_from_slice(&tail);
        start
    })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_decisions_are_consistent(
        buf in header_like_bytes(),
        extra in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let result = parse(&buf);
        let mut longer = buf.clone();
        longer.extend_from_slice(&extra);
        match result {
            // More bytes never turn an error into a header.
            Err(_) => prop_assert!(parse(&longer).is_err()),
            Ok(Parse::Complete { header, consumed }) => {
                prop_assert!(consumed <= buf.len() && consumed <= MAX_HEADER_LEN);
                // The header is the same whatever follows it ...
                let expected = Ok(Parse::Complete { header, consumed });
                prop_assert_eq!(parse(&longer), expected.clone());
                prop_assert_eq!(parse(&buf[..consumed]), expected);
                // ... and every shorter prefix is Incomplete.
                for end in 0..consumed {
                    prop_assert_eq!(parse(&buf[..end]), Ok(Parse::Incomplete));
                }
            }
            Ok(Parse::Incomplete) => {
                prop_assert!(buf.len() < MAX_HEADER_LEN);
                for end in 0..buf.len() {
                    prop_assert_eq!(parse(&buf[..end]), Ok(Parse::Incomplete));
                }
            }
        }
    }

    #[test]
    fn fully_arbitrary_bytes_never_panic(buf in prop::collection::vec(any::<u8>(), 0..2200)) {
        let _ = parse(&buf);
    }

    #[test]
    fn addresses_round_trip_through_both_encoders(
        source in socket_addr(),
        destination in socket_addr(),
        version in prop_oneof![Just(Version::V1), Just(Version::V2)],
        payload in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut buf = Vec::new();
        version.encode(source, destination, &mut buf);
        let len = buf.len();
        for end in 0..len {
            prop_assert_eq!(parse(&buf[..end]), Ok(Parse::Incomplete));
        }
        buf.extend_from_slice(&payload);
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        let (source, destination) = (canonical(source), canonical(destination));
        let (source, destination) = if source.is_ipv4() == destination.is_ipv4() {
            (source, destination)
        } else {
            (
                SocketAddr::new(IpAddr::V6(to_ipv6(source.ip())), source.port()),
                SocketAddr::new(IpAddr::V6(to_ipv6(destination.ip())), destination.port()),
            )
        };
        let header = Header::Proxied { source, destination };
        prop_assert_eq!(parse(&buf), Ok(Parse::Complete { header, consumed: len }));
    }

    #[test]
    fn v1_accepts_every_ipv6_text_form_in_pieces(
        source in ipv6_text(),
        destination in ipv6_text(),
        sport in any::<u16>(),
        dport in any::<u16>(),
    ) {
        let line = format!("PROXY TCP6 {source} {destination} {sport} {dport}\r\n");
        let expected = Header::Proxied {
            source: SocketAddr::new(source.parse().unwrap(), sport),
            destination: SocketAddr::new(destination.parse().unwrap(), dport),
        };
        if line.len() <= V1_MAX_LEN {
            prop_assert_eq!(
                parse(line.as_bytes()),
                Ok(Parse::Complete { header: expected, consumed: line.len() })
            );
        } else {
            prop_assert_eq!(parse(line.as_bytes()), Err(ProxyHeaderError::TooLong));
        }
        for end in 0..line.len().min(V1_MAX_LEN) {
            prop_assert_eq!(parse(&line.as_bytes()[..end]), Ok(Parse::Incomplete));
        }
    }

    #[test]
    fn address_scans_agree_with_std(
        text in address_like_text(),
        quad in dotted_like_text(),
        valid in ipv6_text(),
    ) {
        for text in [&text, &quad] {
            check_ipv4_scan(text.as_bytes());
            check_ipv6_scan(text.as_bytes());
        }
        let heads = [
            "::", "::1:", "1::2:3:4:5:", "1:2:3:4:5::", "1:2:3:4:5:6:", "1:2:3:4:5:6::",
        ];
        for head in heads {
            check_ipv6_scan(format!("{head}{quad}").as_bytes());
        }
        prop_assert!(valid.parse::<Ipv6Addr>().is_ok(), "{}", valid);
        check_ipv6_scan(valid.as_bytes());
    }
}
