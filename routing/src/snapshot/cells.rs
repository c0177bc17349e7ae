//! Reading one row's cells while validating: each reader records a
//! [`RowError`] naming the table, row and column and returns `None`, so a
//! whole table's problems are collected in one pass.

use geoedge_geoip::{CountryCode, GeoPoint};

use super::RowError;
use crate::raw::Value;

/// Cell readers that record an error and return `None`. A valid row costs
/// no allocation: texts are borrowed from the row, and the row's label is
/// written only into an error.
pub(super) struct Cells<'e> {
    /// Where the errors go.
    pub(super) errors: &'e mut Vec<RowError>,
    /// The table being read.
    pub(super) table: &'static str,
    /// The cell that names the row in errors (its id), see [`row_label`].
    pub(super) id: &'e Value,
    /// The row's rowid, naming it when `id` cannot.
    pub(super) rowid: i64,
}

impl Cells<'_> {
    pub(super) fn err(&mut self, column: Option<&'static str>, message: String) {
        self.errors.push(RowError {
            table: self.table,
            row: row_label(self.id, self.rowid),
            column,
            message,
        });
    }

    /// A text cell, trimmed.
    pub(super) fn text<'v>(
        &mut self,
        col: &'static str,
        v: &'v Value,
        required: bool,
    ) -> Option<&'v str> {
        match v {
            Value::Text(s) if !s.trim().is_empty() => Some(s.trim()),
            Value::Null if !required => None,
            Value::Text(_) if !required => None,
            Value::Null | Value::Text(_) => {
                self.err(Some(col), "must not be empty".into());
                None
            }
            other => {
                self.err(
                    Some(col),
                    format!("expected text, found {}", other.type_name()),
                );
                None
            }
        }
    }

    pub(super) fn int(
        &mut self,
        col: &'static str,
        v: &Value,
        default: Option<i64>,
        range: (i64, i64),
    ) -> Option<i64> {
        let n = match v {
            Value::Integer(i) => *i,
            Value::Real(f) if f.fract() == 0.0 && f.abs() < 9e15 => *f as i64,
            Value::Text(s) if s.trim().parse::<i64>().is_ok() => s.trim().parse().ok()?,
            Value::Null if default.is_some() => return default,
            other => {
                self.err(
                    Some(col),
                    format!("expected an integer, found {}", describe(other)),
                );
                return None;
            }
        };
        if n < range.0 || n > range.1 {
            let msg = if n < 0 && range.0 >= 0 {
                format!("{n} is negative")
            } else {
                format!("{n} is outside {}..={}", range.0, range.1)
            };
            self.err(Some(col), msg);
            return None;
        }
        Some(n)
    }

    pub(super) fn flag(&mut self, col: &'static str, v: &Value, default: bool) -> Option<bool> {
        self.int(col, v, Some(default as i64), (0, 1))
            .map(|n| n == 1)
    }

    pub(super) fn real(&mut self, col: &'static str, v: &Value) -> Option<Option<f64>> {
        match v {
            Value::Null => Some(None),
            Value::Real(f) => Some(Some(*f)),
            Value::Integer(i) => Some(Some(*i as f64)),
            Value::Text(s) if s.trim().parse::<f64>().is_ok() => Some(s.trim().parse().ok()),
            other => {
                self.err(
                    Some(col),
                    format!("expected a number, found {}", describe(other)),
                );
                None
            }
        }
    }

    pub(super) fn point(
        &mut self,
        lat: &Value,
        lon: &Value,
        required: bool,
    ) -> Option<Option<GeoPoint>> {
        let (la, lo) = (self.real("latitude", lat)?, self.real("longitude", lon)?);
        match (la, lo) {
            (None, None) if !required => Some(None),
            (Some(la), Some(lo)) => match GeoPoint::new(la, lo) {
                Some(p) => Some(Some(p)),
                None => {
                    self.err(
                        Some("latitude"),
                        format!("({la}, {lo}) is not a valid latitude/longitude"),
                    );
                    None
                }
            },
            _ => {
                let msg = if required {
                    "latitude and longitude are required"
                } else {
                    "latitude and longitude must be both set or both NULL"
                };
                self.err(Some("latitude"), msg.into());
                None
            }
        }
    }

    pub(super) fn country(
        &mut self,
        col: &'static str,
        v: &Value,
        required: bool,
    ) -> Option<Option<CountryCode>> {
        match self.text(col, v, required) {
            None if !required && matches!(v, Value::Null | Value::Text(_)) => Some(None),
            None => None,
            Some(s) => match CountryCode::parse(s) {
                Ok(c) => Some(Some(c)),
                Err(_) => {
                    self.err(
                        Some(col),
                        format!("{s:?} is not an ISO 3166-1 alpha-2 code"),
                    );
                    None
                }
            },
        }
    }
}

pub(super) fn describe(v: &Value) -> String {
    match v {
        Value::Text(s) => format!("text {s:?}"),
        Value::Real(f) => format!("real {f}"),
        other => other.type_name().to_owned(),
    }
}

pub(super) fn row_label(id: &Value, rowid: i64) -> String {
    match id {
        Value::Text(s) if !s.trim().is_empty() => format!("{:?}", s.trim()),
        _ => format!("rowid {rowid}"),
    }
}
