//! The command line ([`cli`]) and the commands: `run` ([`run`]), `demo`,
//! `route`, `db`, `probe` (in [`cli`]), `admin` and `route --live` ([`admin`]), `wg` (with the WireGuard device of
//! `run`: [`wg`], [`wg_key`]) and `check-host`. The top layer: uses
//! [`crate::control`] and [`crate::data`].

pub mod admin;
pub mod check_host;
pub mod cli;
pub mod db;
pub mod demo;
pub mod fleet;
pub mod route;
pub mod run;
pub mod wg;
pub mod wg_key;
