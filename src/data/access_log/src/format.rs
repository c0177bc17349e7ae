//! The two line formats ([`format_text`], [`format_json`]), the RFC 3339
//! timestamp they share and the escaping of free text in the text format
//! (which the journald fields reuse). Pure functions: no IO, no allocation
//! beyond growing the caller's `String`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::Record;

/// The last instant an RFC 3339 four-digit year can show:
/// 9999-12-31T23:59:59.999Z.
const MAX_SECS: u64 = 253_402_300_799;

/// A UTC instant written as RFC 3339 with milliseconds,
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (24 ASCII bytes). Times before 1970 are
/// written as 1970-01-01T00:00:00.000Z and times after year 9999 as
/// 9999-12-31T23:59:59.999Z (a clock that far off shows as such a line
/// rather than as a panic).
#[derive(Clone, Copy)]
pub struct Rfc3339Millis([u8; 24]);

impl Rfc3339Millis {
    /// Formats `t`.
    pub fn new(t: SystemTime) -> Self {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        let (secs, millis) = if since.as_secs() > MAX_SECS {
            (MAX_SECS, 999)
        } else {
            (since.as_secs(), since.subsec_millis())
        };
        let (y, m, d) = civil_from_days(secs / 86_400);
        let sod = secs % 86_400;
        let mut b = *b"0000-00-00T00:00:00.000Z";
        put_digits(&mut b[0..4], y);
        put_digits(&mut b[5..7], u64::from(m));
        put_digits(&mut b[8..10], u64::from(d));
        put_digits(&mut b[11..13], sod / 3600);
        put_digits(&mut b[14..16], sod % 3600 / 60);
        put_digits(&mut b[17..19], sod % 60);
        put_digits(&mut b[20..23], u64::from(millis));
        Rfc3339Millis(b)
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("1970-01-01T00:00:00.000Z")
    }
}

impl std::fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes `v` in decimal into `out`, right-aligned with leading zeros
/// (the high digits are dropped if it does not fit; callers size it).
fn put_digits(out: &mut [u8], mut v: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// The proleptic Gregorian (year, month, day) of day `days` after
/// 1970-01-01: Howard Hinnant's `civil_from_days`, for days on or after the
/// epoch.
pub(crate) fn civil_from_days(days: u64) -> (u64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Whole milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The country code as text when it is two ASCII letters or digits.
fn country(c: &Option<[u8; 2]>) -> Option<&str> {
    let c = c.as_ref()?;
    if c.iter().all(u8::is_ascii_alphanumeric) {
        std::str::from_utf8(c).ok()
    } else {
        None
    }
}

/// Whether a byte of free text stays as it is in the text format.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'.' | b'-' | b'_' | b'*' | b':' | b'@' | b'+' | b'[' | b']'
        )
}

/// Appends free text (SNI, app, backend, region, ...) as one field of the
/// text format: ASCII letters, digits and `. - _ * : @ + [ ]` stay, every
/// other byte (space, `/`, `\`, quotes, control and non-ASCII bytes) is
/// written as `\xHH`; an empty value is `-` and a value that is exactly
/// `-` is `\x2D`, so `-` always means unknown. The result never holds a
/// space, a newline or a `/`.
pub fn push_escaped(out: &mut String, s: &str) {
    if s.is_empty() {
        out.push('-');
        return;
    }
    if s == "-" {
        out.push_str("\\x2D");
        return;
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if plain(b) {
            continue;
        }
        // Bytes from `start` to `i` are plain ASCII, so both ends are
        // character boundaries (`get` keeps this panic-free regardless).
        out.push_str(s.get(start..i).unwrap_or(""));
        out.push('\\');
        out.push('x');
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xF)] as char);
        // Every byte of a multi-byte character is escaped on its own.
        start = i + 1;
    }
    out.push_str(s.get(start..).unwrap_or(""));
}

/// `push_escaped`, or `-` when unknown.
fn push_opt(out: &mut String, s: Option<&str>) {
    match s {
        Some(s) => push_escaped(out, s),
        None => out.push('-'),
    }
}

/// Appends `v` in decimal (what `write!` does, without the formatting
/// machinery).
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// A socket address as text (`ip:port`, IPv6 in brackets), on the stack.
pub(crate) struct AddrText {
    buf: [u8; 72],
    len: usize,
}

impl std::fmt::Write for AddrText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

impl AddrText {
    pub(crate) fn new(addr: &SocketAddr) -> AddrText {
        let mut t = AddrText {
            buf: [0; 72],
            len: 0,
        };
        match addr {
            SocketAddr::V4(a) => {
                // The common case, without the formatting machinery.
                for (n, o) in a.ip().octets().into_iter().enumerate() {
                    if n > 0 {
                        t.push(b'.');
                    }
                    t.push_num(u64::from(o));
                }
                t.push(b':');
                t.push_num(u64::from(a.port()));
            }
            // The longest, `[` 39 characters `%` 10 digits `]:65535`, is
            // 58 bytes.
            SocketAddr::V6(a) => {
                let _ = write!(t, "{a}");
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn push_num(&mut self, v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        for &d in &digits[i..] {
            self.push(d);
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("-")
    }
}

/// Appends `r` as one line of the text format to `out`, without a newline
/// (the writer adds it for stdout and files; a journald entry has none).
/// The layout is in the crate documentation.
pub fn format_text(r: &Record, out: &mut String) {
    out.push_str(AddrText::new(&r.client).as_str());
    out.push_str(" [");
    out.push_str(Rfc3339Millis::new(r.start).as_str());
    out.push_str("] ");
    match &r.listener {
        Some(l) => out.push_str(AddrText::new(l).as_str()),
        None => out.push('-'),
    }
    out.push(' ');
    push_escaped(out, &r.app);
    out.push('/');
    push_opt(out, r.backend.as_deref());
    out.push(' ');
    match r.connect_time {
        Some(c) => push_u64(out, millis(c)),
        None => out.push('-'),
    }
    out.push('/');
    push_u64(out, millis(r.duration));
    out.push(' ');
    push_u64(out, r.bytes_up);
    out.push(' ');
    push_u64(out, r.bytes_down);
    out.push(' ');
    out.push_str(r.end.as_str());
    out.push(' ');
    push_opt(out, country(&r.country));
    out.push(' ');
    push_opt(out, r.region.as_deref());
    out.push(' ');
    push_opt(out, r.reason);
    out.push('/');
    push_opt(out, r.tier);
    out.push(' ');
    push_opt(out, r.sni.as_deref());
    out.push_str(" attempts=");
    push_u64(out, u64::from(r.attempts));
}

/// One line of the JSON format, in its key order.
#[derive(Serialize)]
struct JsonLine<'a> {
    start: &'a str,
    duration_ms: u64,
    client: &'a str,
    country: Option<&'a str>,
    region: Option<&'a str>,
    app: &'a str,
    sni: Option<&'a str>,
    listener: Option<&'a str>,
    backend: Option<&'a str>,
    reason: Option<&'a str>,
    tier: Option<&'a str>,
    attempts: u32,
    connect_ms: Option<u64>,
    bytes_up: u64,
    bytes_down: u64,
    end: &'a str,
}

/// Appends `r` as one JSON object to `out`, without a newline (the writer
/// adds it for stdout and files). Every key is always present, `null` when
/// unknown; strings are escaped by serde_json, so the line holds no raw
/// control character.
pub fn format_json(r: &Record, out: &mut String) {
    let start = Rfc3339Millis::new(r.start);
    let client = AddrText::new(&r.client);
    let listener = r.listener.as_ref().map(AddrText::new);
    let line = JsonLine {
        start: start.as_str(),
        duration_ms: millis(r.duration),
        client: client.as_str(),
        country: country(&r.country),
        region: r.region.as_deref(),
        app: &r.app,
        sni: r.sni.as_deref(),
        listener: listener.as_ref().map(AddrText::as_str),
        backend: r.backend.as_deref(),
        reason: r.reason,
        tier: r.tier,
        attempts: r.attempts,
        connect_ms: r.connect_time.map(millis),
        bytes_up: r.bytes_up,
        bytes_down: r.bytes_down,
        end: r.end.as_str(),
    };
    // serde_json writes into the String's own bytes (no copy, no
    // allocation beyond growing it), which are checked back into a String.
    let mut bytes = std::mem::take(out).into_bytes();
    // Serializing strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut bytes, &line);
    *out = match String::from_utf8(bytes) {
        Ok(s) => s,
        // serde_json writes UTF-8 only; never cut a line over it.
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
}
