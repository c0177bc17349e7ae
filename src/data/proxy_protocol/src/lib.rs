//! The HAProxy PROXY protocol, versions 1 (text) and 2 (binary): this crate
//! owns parsing the header a load balancer puts in front of a client's
//! stream and encoding the one geoedge puts in front of the stream it opens
//! to a backend. It does no IO: [`parse`] looks at the bytes read so far and
//! says whether they start with a complete header, may still become one, or
//! never can; the encoders append to a `Vec<u8>`.
//!
//! Spec: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>.
//! Where the spec leaves room, this crate chooses:
//!
//! - **Strictness.** Bytes that cannot start a valid header are an error as
//!   soon as that shows, so a client that speaks HTTP (or anything else) to
//!   a PROXY-protocol port is rejected on its first byte.
//! - **v1 addresses** are what [`Ipv4Addr`] and [`Ipv6Addr`] parse: a dotted
//!   quad without leading zeros for `TCP4`, any RFC 4291 text form (with an
//!   optional dotted IPv4 tail, no zone) for `TCP6`. A TCP6 IPv4-mapped
//!   address stays an IPv6 address. **v1 ports** are 0–65535 in decimal,
//!   without sign or leading zeros (`0` itself is fine). After `UNKNOWN`
//!   anything up to the CRLF is ignored, as the spec requires.
//! - **v2**: the LOCAL command gives [`Header::Local`] whatever its family;
//!   the PROXY command gives [`Header::Proxied`] for TCP over IPv4 or IPv6,
//!   [`Header::Local`] for UNSPEC, and [`ProxyHeaderError::Unsupported`] for
//!   any other family/protocol (UDP, unix sockets, undefined values). TLVs
//!   after the addresses are skipped unchecked. The address-and-TLV block may
//!   be at most [`V2_MAX_ADDRESS_LEN`] bytes.
//! - **Encoding**: when the source and destination families differ, both
//!   are sent as IPv6, the IPv4 one IPv4-mapped (`::ffff:a.b.c.d`).

#![forbid(unsafe_code)]

use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// What starts every v1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// The longest v1 header, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// What starts every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Signature, version/command, family/protocol and length.
const V2_FIXED_LEN: usize = 16;

/// The most address-and-TLV bytes accepted after a v2 header's fixed part.
pub const V2_MAX_ADDRESS_LEN: usize = 2048;

/// The longest header [`parse`] accepts, of either version: a reader never
/// needs to buffer more than this before [`parse`] decides.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_ADDRESS_LEN;

const V2_CMD_LOCAL: u8 = 0x0;
const V2_CMD_PROXY: u8 = 0x1;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const V2_UNSPEC: u8 = 0x00;
const V2_TCP4_ADDRESS_LEN: u16 = 12;
const V2_TCP6_ADDRESS_LEN: u16 = 36;

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// TCP over IPv4/IPv6 with real addresses.
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 "UNKNOWN", the v2 LOCAL command, or the v2 PROXY command with the
    /// UNSPEC family: use the socket's own addresses.
    Local,
}

/// The outcome of [`parse`] on the bytes read so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// A valid header fills the first `consumed` bytes; what follows is the
    /// client's stream.
    Complete { header: Header, consumed: usize },
    /// The bytes so far are a proper prefix of a valid header: read more.
    Incomplete,
}

/// Why bytes are not a valid PROXY protocol header.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Neither `PROXY ` nor the v2 signature.
    #[error("not a PROXY protocol header")]
    NotProxyProtocol,
    /// The v1 line is not `PROXY <protocol> ...` with the right fields,
    /// single spaces and a CRLF.
    #[error("malformed PROXY v1 header: {0}")]
    V1Syntax(&'static str),
    /// A v1 address is not one of the declared family (`TCP4` or `TCP6`).
    #[error("malformed PROXY v1 header: invalid {family} address")]
    V1Address { family: &'static str },
    /// A v1 port is not a decimal number from 0 to 65535.
    #[error("malformed PROXY v1 header: port is not 0-65535 in decimal without leading zeros")]
    V1Port,
    /// The v2 version nibble is not 2.
    #[error("PROXY v2 header has version {0}, not 2")]
    V2Version(u8),
    /// The v2 command nibble is neither LOCAL nor PROXY.
    #[error("PROXY v2 header has command {0}, neither LOCAL (0) nor PROXY (1)")]
    V2Command(u8),
    /// The v2 length cannot hold the addresses of the declared family.
    #[error("PROXY v2 address block of {len} bytes is shorter than the {need} its family needs")]
    V2AddressTooShort { len: u16, need: u16 },
    /// A v2 PROXY command for something other than TCP over IPv4 or IPv6
    /// (or UNSPEC).
    #[error(
        "PROXY v2 header proxies family/protocol {0:#04x}; only TCP over IPv4 or IPv6 is supported"
    )]
    Unsupported(u8),
    /// No CRLF within the first 107 bytes (v1), or more than 2048 bytes of
    /// addresses and TLVs (v2).
    #[error("PROXY header too long (v1: over 107 bytes; v2: over 16 + 2048 bytes)")]
    TooLong,
}

impl ProxyHeaderError {
    /// A short snake_case label, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotProxyProtocol => "not_proxy_protocol",
            Self::V1Syntax(_) => "v1_syntax",
            Self::V1Address { .. } => "v1_address",
            Self::V1Port => "v1_port",
            Self::V2Version(_) => "v2_version",
            Self::V2Command(_) => "v2_command",
            Self::V2AddressTooShort { .. } => "v2_address_too_short",
            Self::Unsupported(_) => "unsupported",
            Self::TooLong => "too_long",
        }
    }
}

/// Parses a header at the start of `buf` (bytes read so far).
///
/// Strict: anything that is not a valid v1 or v2 header is an error as soon
/// as it can be told apart; `Incomplete` only while `buf` is a proper prefix
/// of some valid header. (One approximation: a v1 line that could still be
/// valid but could no longer end within 107 bytes stays `Incomplete` until
/// the 107th byte.) Never panics and never allocates.
pub fn parse(buf: &[u8]) -> Result<Parse, ProxyHeaderError> {
    if starts_like(buf, V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parse::Incomplete);
        }
        return parse_v1(buf);
    }
    if starts_like(buf, V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parse::Incomplete);
        }
        return parse_v2(buf);
    }
    Err(ProxyHeaderError::NotProxyProtocol)
}

/// Whether `buf` and `magic` agree on their common length.
fn starts_like(buf: &[u8], magic: &[u8]) -> bool {
    let n = buf.len().min(magic.len());
    buf[..n] == magic[..n]
}

/// `buf` starts with `PROXY `.
fn parse_v1(buf: &[u8]) -> Result<Parse, ProxyHeaderError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        check_v1_body(&window[V1_PREFIX.len()..], false)?;
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyHeaderError::TooLong)
        } else {
            Ok(Parse::Incomplete)
        };
    };
    if window[end] == b'\n' {
        return Err(ProxyHeaderError::V1Syntax(
            "line ends with LF instead of CRLF",
        ));
    }
    let header = check_v1_body(&window[V1_PREFIX.len()..end], true)?;
    let consumed = end + 2;
    if consumed > V1_MAX_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    match (buf.get(end + 1), header) {
        (None, _) => Ok(Parse::Incomplete),
        (Some(b'\n'), Some(header)) => Ok(Parse::Complete { header, consumed }),
        // (`check_v1_body` gives a header for every whole body it accepts.)
        _ => Err(ProxyHeaderError::V1Syntax("CR not followed by LF")),
    }
}

/// Checks what follows `PROXY ` on a v1 line: the whole of it, CR excluded,
/// when `complete` (and then returns the header), else the bytes so far
/// (and then returns `None` if they can still become a valid line).
fn check_v1_body(body: &[u8], complete: bool) -> Result<Option<Header>, ProxyHeaderError> {
    const PROTOCOLS: [&[u8]; 3] = [b"TCP4", b"TCP6", b"UNKNOWN"];
    let (protocol, rest) = match body.iter().position(|&b| b == b' ') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let family = match protocol {
        b"TCP4" => Family::V4,
        b"TCP6" => Family::V6,
        // The spec: ignore anything after UNKNOWN up to the CRLF.
        b"UNKNOWN" => return Ok(complete.then_some(Header::Local)),
        _ if !complete && rest.is_none() && PROTOCOLS.iter().any(|p| p.starts_with(protocol)) => {
            return Ok(None)
        }
        _ => {
            return Err(ProxyHeaderError::V1Syntax(
                "protocol is not TCP4, TCP6 or UNKNOWN after a single space",
            ))
        }
    };
    let Some(rest) = rest else {
        return if complete {
            Err(ProxyHeaderError::V1Syntax(
                "TCP4 and TCP6 need addresses and ports",
            ))
        } else {
            Ok(None)
        };
    };

    let mut fields: [&[u8]; 4] = [&[]; 4];
    let mut count = 0;
    for field in rest.split(|&b| b == b' ') {
        let Some(slot) = fields.get_mut(count) else {
            return Err(ProxyHeaderError::V1Syntax(
                "more than two addresses and two ports, or a trailing space",
            ));
        };
        *slot = field;
        count += 1;
    }
    if complete && count < fields.len() {
        return Err(ProxyHeaderError::V1Syntax(
            "fewer than two addresses and two ports",
        ));
    }

    let mut ips = [None; 2];
    let mut ports = [None; 2];
    for (i, field) in fields[..count].iter().enumerate() {
        // The field the line may still be in the middle of.
        let partial = !complete && i + 1 == count;
        if field.is_empty() {
            if partial {
                break;
            }
            return Err(ProxyHeaderError::V1Syntax(
                "empty field (fields are separated by single spaces)",
            ));
        }
        if i < 2 {
            if partial {
                if !family.viable(field) {
                    return Err(family.error());
                }
            } else {
                ips[i] = Some(family.parse(field).ok_or(family.error())?);
            }
        } else {
            ports[i - 2] = Some(parse_port(field).ok_or(ProxyHeaderError::V1Port)?);
        }
    }
    Ok(match (ips, ports) {
        ([Some(src), Some(dst)], [Some(sport), Some(dport)]) if complete => Some(Header::Proxied {
            source: SocketAddr::new(src, sport),
            destination: SocketAddr::new(dst, dport),
        }),
        _ => None,
    })
}

/// The address family a v1 line declares.
#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn parse(self, field: &[u8]) -> Option<IpAddr> {
        let text = std::str::from_utf8(field).ok()?;
        match self {
            Self::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            Self::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        }
    }

    /// Whether `field` can still grow into an address of this family.
    fn viable(self, field: &[u8]) -> bool {
        match self {
            Self::V4 => ipv4_scan(field).is_some(),
            Self::V6 => ipv6_scan(field).is_some(),
        }
    }

    fn error(self) -> ProxyHeaderError {
        ProxyHeaderError::V1Address {
            family: match self {
                Self::V4 => "TCP4",
                Self::V6 => "TCP6",
            },
        }
    }
}

/// A v1 port: 1 to 5 decimal digits, no leading zero unless it is `0`, at
/// most 65535. Every non-empty prefix of a valid port is itself valid, so
/// this checks partial ports too.
fn parse_port(field: &[u8]) -> Option<u16> {
    if field.is_empty() || field.len() > 5 || (field.len() > 1 && field[0] == b'0') {
        return None;
    }
    let mut value: u32 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    u16::try_from(value).ok()
}

/// Adds a decimal digit to a dotted-quad octet read so far (`None`: no digit
/// yet); `None` when the octet would be invalid (leading zero, over 255).
fn push_octet_digit(octet: Option<u16>, digit: u8) -> Option<u16> {
    let digit = u16::from(digit - b'0');
    match octet {
        None => Some(digit),
        Some(0) => None,
        Some(value) => Some(value * 10 + digit).filter(|&v| v <= 255),
    }
}

/// Progress through a dotted quad as [`Ipv4Addr`] parses it.
#[derive(Clone, Copy, Debug)]
struct Ipv4Scan {
    dots: u8,
    /// The octet being read; `None` before its first digit.
    octet: Option<u16>,
}

impl Ipv4Scan {
    const START: Self = Self {
        dots: 0,
        octet: None,
    };

    /// `None` when `b` cannot follow.
    fn push(self, b: u8) -> Option<Self> {
        match b {
            b'0'..=b'9' => Some(Self {
                octet: Some(push_octet_digit(self.octet, b)?),
                ..self
            }),
            b'.' if self.dots < 3 && self.octet.is_some() => Some(Self {
                dots: self.dots + 1,
                octet: None,
            }),
            _ => None,
        }
    }

    #[cfg(test)]
    fn is_complete(self) -> bool {
        self.dots == 3 && self.octet.is_some()
    }
}

/// Scans a dotted quad; `None` once it cannot become one.
fn ipv4_scan(text: &[u8]) -> Option<Ipv4Scan> {
    text.iter()
        .try_fold(Ipv4Scan::START, |scan, &b| scan.push(b))
}

/// Where an IPv6 text scan stands.
#[derive(Clone, Copy, Debug)]
enum Ipv6Token {
    /// Nothing read.
    Start,
    /// A `:` at the very start, which must be the first half of `::`.
    LeadingColon,
    /// A `:` after a group.
    Colon,
    /// The `::`.
    DoubleColon,
    /// A group of `digits` hex digits; `octet` is its value while it could
    /// still be the first octet of a dotted IPv4 tail.
    Group { digits: u8, octet: Option<u16> },
    /// A dotted IPv4 tail past its first dot.
    Ipv4(Ipv4Scan),
}

/// Progress through an IPv6 address in the text forms [`Ipv6Addr`] parses
/// (RFC 4291 §2.2): eight groups of one to four hex digits separated by `:`,
/// or fewer with one `::` standing for at least one group of zeros, the last
/// two groups optionally written as a dotted quad.
#[derive(Clone, Copy, Debug)]
struct Ipv6Scan {
    /// Groups finished (a dotted tail counts when it starts), not counting
    /// those the `::` stands for.
    groups: u8,
    compressed: bool,
    token: Ipv6Token,
}

impl Ipv6Scan {
    const START: Self = Self {
        groups: 0,
        compressed: false,
        token: Ipv6Token::Start,
    };

    /// The most groups that can be written out.
    fn max_groups(self) -> u8 {
        if self.compressed {
            7
        } else {
            8
        }
    }

    /// `None` when `b` cannot follow.
    fn push(self, b: u8) -> Option<Self> {
        use Ipv6Token::*;
        let token = match (self.token, b) {
            (Start, b':') => LeadingColon,
            (LeadingColon | Colon, b':') if !self.compressed => {
                return Some(Self {
                    compressed: true,
                    token: DoubleColon,
                    ..self
                })
            }
            (Start | Colon | DoubleColon, _) if b.is_ascii_hexdigit() => {
                if self.groups >= self.max_groups() {
                    return None;
                }
                Group {
                    digits: 1,
                    octet: b.is_ascii_digit().then(|| u16::from(b - b'0')),
                }
            }
            (Group { digits, octet }, _) if b.is_ascii_hexdigit() => {
                if digits == 4 {
                    return None;
                }
                Group {
                    digits: digits + 1,
                    octet: octet
                        .filter(|_| b.is_ascii_digit())
                        .and_then(|o| push_octet_digit(Some(o), b)),
                }
            }
            (Group { .. }, b':') => {
                let groups = self.groups + 1;
                // Another group (or the `::`) must fit after this `:`.
                if groups >= self.max_groups() {
                    return None;
                }
                return Some(Self {
                    groups,
                    token: Colon,
                    ..self
                });
            }
            (Group { octet: Some(_), .. }, b'.') => {
                // The dotted quad stands for the last two groups.
                let fits = if self.compressed {
                    self.groups + 2 <= 7
                } else {
                    self.groups == 6
                };
                if !fits {
                    return None;
                }
                return Some(Self {
                    groups: self.groups + 2,
                    token: Ipv4(Ipv4Scan {
                        dots: 1,
                        octet: None,
                    }),
                    ..self
                });
            }
            (Ipv4(scan), _) => Ipv4(scan.push(b)?),
            _ => return None,
        };
        Some(Self { token, ..self })
    }

    /// Whether the text so far is a whole address.
    #[cfg(test)]
    fn is_complete(self) -> bool {
        match self.token {
            Ipv6Token::DoubleColon => true,
            Ipv6Token::Group { .. } => self.compressed || self.groups + 1 == 8,
            Ipv6Token::Ipv4(scan) => scan.is_complete(),
            _ => false,
        }
    }
}

/// Scans IPv6 text; `None` once it cannot become an address.
fn ipv6_scan(text: &[u8]) -> Option<Ipv6Scan> {
    text.iter()
        .try_fold(Ipv6Scan::START, |scan, &b| scan.push(b))
}

/// `buf` starts with the v2 signature.
fn parse_v2(buf: &[u8]) -> Result<Parse, ProxyHeaderError> {
    let Some(&version_command) = buf.get(12) else {
        return Ok(Parse::Incomplete);
    };
    let version = version_command >> 4;
    if version != 2 {
        return Err(ProxyHeaderError::V2Version(version));
    }
    let command = version_command & 0x0f;
    if command != V2_CMD_LOCAL && command != V2_CMD_PROXY {
        return Err(ProxyHeaderError::V2Command(command));
    }
    let Some(&family) = buf.get(13) else {
        return Ok(Parse::Incomplete);
    };
    // The address bytes the header must carry; 0 when it gives Local.
    let need = match (command, family) {
        (V2_CMD_PROXY, V2_TCP4) => V2_TCP4_ADDRESS_LEN,
        (V2_CMD_PROXY, V2_TCP6) => V2_TCP6_ADDRESS_LEN,
        (V2_CMD_PROXY, V2_UNSPEC) => 0,
        (V2_CMD_PROXY, _) => return Err(ProxyHeaderError::Unsupported(family)),
        _ => 0,
    };
    let (Some(&high), Some(&low)) = (buf.get(14), buf.get(15)) else {
        return Ok(Parse::Incomplete);
    };
    let len = u16::from_be_bytes([high, low]);
    if usize::from(len) > V2_MAX_ADDRESS_LEN {
        return Err(ProxyHeaderError::TooLong);
    }
    if len < need {
        return Err(ProxyHeaderError::V2AddressTooShort { len, need });
    }
    let consumed = V2_FIXED_LEN + usize::from(len);
    let Some(block) = buf.get(V2_FIXED_LEN..consumed) else {
        return Ok(Parse::Incomplete);
    };
    let header = match need {
        V2_TCP4_ADDRESS_LEN => {
            let (src, dst, ports) = (&block[0..4], &block[4..8], &block[8..12]);
            let ip = |b: &[u8]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
            Header::Proxied {
                source: SocketAddr::new(ip(src), u16::from_be_bytes([ports[0], ports[1]])),
                destination: SocketAddr::new(ip(dst), u16::from_be_bytes([ports[2], ports[3]])),
            }
        }
        V2_TCP6_ADDRESS_LEN => {
            let mut src = [0; 16];
            let mut dst = [0; 16];
            src.copy_from_slice(&block[0..16]);
            dst.copy_from_slice(&block[16..32]);
            let ports = &block[32..36];
            Header::Proxied {
                source: SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(src)),
                    u16::from_be_bytes([ports[0], ports[1]]),
                ),
                destination: SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(dst)),
                    u16::from_be_bytes([ports[2], ports[3]]),
                ),
            }
        }
        _ => Header::Local,
    };
    Ok(Parse::Complete { header, consumed })
}

/// The pair with a common family: as given when they share one, else both
/// IPv6 with the IPv4 one IPv4-mapped. Only the IPs and ports are kept.
/// The addresses of a header, in one family: each in its canonical form
/// first (an IPv4-mapped IPv6 address, as a dual-stack `[::]` listener
/// reports an IPv4 client, is the IPv4 address it maps, as routing takes
/// it), then IPv4 when both are, else both as IPv6.
fn common_family(source: SocketAddr, destination: SocketAddr) -> (IpAddr, IpAddr) {
    match (source.ip().to_canonical(), destination.ip().to_canonical()) {
        (src @ IpAddr::V4(_), dst @ IpAddr::V4(_)) => (src, dst),
        (src, dst) => (IpAddr::V6(to_ipv6(src)), IpAddr::V6(to_ipv6(dst))),
    }
}

fn to_ipv6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// Appends a v1 header for a TCP connection from `source` to `destination`
/// to `out`: `TCP4` when both are IPv4 (or IPv4-mapped IPv6), else `TCP6`.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = common_family(source, destination);
    let protocol = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    // Writing to a Vec cannot fail.
    let _ = write!(
        out,
        "PROXY {protocol} {src} {dst} {} {}\r\n",
        source.port(),
        destination.port()
    );
}

/// Appends a v2 header (PROXY command, TCP, no TLVs) for a connection from
/// `source` to `destination` to `out`: IPv4 when both are, else IPv6.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(V2_SIGNATURE);
    out.push(0x20 | V2_CMD_PROXY);
    match common_family(source, destination) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&V2_TCP4_ADDRESS_LEN.to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&V2_TCP6_ADDRESS_LEN.to_be_bytes());
            out.extend_from_slice(&to_ipv6(src).octets());
            out.extend_from_slice(&to_ipv6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

/// A PROXY protocol version, as written in settings: `v1` or `v2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// Appends this version's header to `out` ([`encode_v1`] or
    /// [`encode_v2`]).
    pub fn encode(self, source: SocketAddr, destination: SocketAddr, out: &mut Vec<u8>) {
        match self {
            Self::V1 => encode_v1(source, destination, out),
            Self::V2 => encode_v2(source, destination, out),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
        })
    }
}

/// A string that is neither `v1` nor `v2`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[error("PROXY protocol version must be \"v1\" or \"v2\"")]
pub struct ParseVersionError;

impl FromStr for Version {
    type Err = ParseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "v1" => Ok(Self::V1),
            "v2" => Ok(Self::V2),
            _ => Err(ParseVersionError),
        }
    }
}

#[cfg(test)]
mod tests;
