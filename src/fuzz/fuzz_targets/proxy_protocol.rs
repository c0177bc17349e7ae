//! Fuzzes the PROXY protocol v1/v2 parser on arbitrary bytes, as a client
//! in front of a `proxy_protocol` listener sends them, and the encoders
//! round-trip through it.
//!
//! Beyond "never panics", [`proxy_protocol::parse`] is checked as the reader
//! uses it, one prefix at a time: as the buffer grows, the answer is
//! `Incomplete` for a while and then settles for good on an error or on one
//! complete header (the same header, the same length consumed, whatever the
//! client sends after it); `Incomplete` never lasts to
//! [`proxy_protocol::MAX_HEADER_LEN`] bytes, so a bounded read buffer always
//! gets an answer. The same input also picks two socket addresses whose v1
//! and v2 encodings must parse back to them.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;

use geoedge_proxy_protocol as proxy_protocol;
use proxy_protocol::{parse, Header, Parse, Version, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    prefixes_settle(data);
    round_trip(data);
});

/// Parses every prefix of `data` up to the point where the answer settles,
/// then the whole of `data`, and checks the answers agree.
fn prefixes_settle(data: &[u8]) {
    let whole = parse(data);
    let mut settled = None;
    for n in 0..=data.len() {
        let r = parse(&data[..n]);
        if r == Ok(Parse::Incomplete) {
            assert!(
                n < MAX_HEADER_LEN,
                "still incomplete after {n} bytes: {:?}",
                &data[..n]
            );
            continue;
        }
        if let Ok(Parse::Complete { consumed, .. }) = r {
            assert_eq!(consumed, n, "complete before its last byte arrived");
        }
        // Every longer prefix must give the same answer; checking the whole
        // input is enough (and keeps a run linear in its length).
        settled = Some(r);
        break;
    }
    match settled {
        None => assert_eq!(whole, Ok(Parse::Incomplete)),
        // An error stays an error (which one may depend on how much was
        // seen: a line ending is noticed only once it arrives).
        Some(Err(_)) => assert!(
            whole.is_err(),
            "an error became {whole:?} as more bytes came"
        ),
        Some(first) => assert_eq!(whole, first, "the answer changed as more bytes came"),
    }
    match whole {
        Ok(Parse::Complete { consumed, header }) => {
            assert!(consumed <= MAX_HEADER_LEN);
            if let Header::Proxied {
                source,
                destination,
            } = header
            {
                assert_eq!(source.is_ipv4(), destination.is_ipv4(), "mixed families");
            }
        }
        // Every error has a message and a metric label.
        Err(e) => {
            assert!(!e.to_string().is_empty());
            assert!(!e.reason().is_empty());
        }
        Ok(Parse::Incomplete) => {}
    }
}

/// Encodes two addresses taken from the input's first 36 bytes and parses
/// the result back.
fn round_trip(data: &[u8]) {
    if data.len() < 36 {
        return;
    }
    let addr = |b: &[u8], v4: bool| -> SocketAddr {
        let port = u16::from_be_bytes([b[0], b[1]]);
        let ip = if v4 {
            IpAddr::V4(Ipv4Addr::new(b[2], b[3], b[4], b[5]))
        } else {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[2..18]);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        SocketAddr::new(ip, port)
    };
    let source = addr(&data[0..18], data[0] & 1 == 0);
    let destination = addr(&data[18..36], data[18] & 1 == 0);
    // Each address is sent in its canonical form (an IPv4-mapped IPv6
    // address as the IPv4 address it maps); then mixed families are sent as
    // IPv6, the IPv4 one IPv4-mapped.
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let both_ipv4 = canonical(source).is_ipv4() && canonical(destination).is_ipv4();
    let expected = |a: SocketAddr| -> SocketAddr {
        let a = canonical(a);
        if both_ipv4 {
            a
        } else {
            let v6 = match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            SocketAddr::new(IpAddr::V6(v6), a.port())
        }
    };
    for version in [Version::V1, Version::V2] {
        let mut out = Vec::new();
        version.encode(source, destination, &mut out);
        // What the client sends after the header must not change the result.
        let header_len = out.len();
        out.extend_from_slice(&data[36..]);
        assert_eq!(
            parse(&out),
            Ok(Parse::Complete {
                header: Header::Proxied {
                    source: expected(source),
                    destination: expected(destination),
                },
                consumed: header_len,
            }),
            "{version} encoding of {source} -> {destination}: {:?}",
            &out[..header_len]
        );
    }
}
