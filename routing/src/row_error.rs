//! One problem with one row of routing.db (or with the table as a whole):
//! what every validator reports, the snapshot's and the WireGuard peers'.

use std::fmt;

/// One problem with one row (or with the table as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Table the row is in (`backends`, `regions`, `country_regions`), or `routing.db`.
    pub table: &'static str,
    /// The row's id (or rowid when the id itself is unusable).
    pub row: String,
    /// The offending column, when one is to blame.
    pub column: Option<&'static str>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.table, self.row)?;
        if let Some(c) = self.column {
            write!(f, " column {c}")?;
        }
        write!(f, ": {}", self.message)
    }
}
