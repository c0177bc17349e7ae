//! Load and limits across the POPs of a fleet, as bookkeeping with no IO
//! and no clock (every input carries `now`): what the other edges report
//! of their connections ([`load_board`]), and the slots of a backend's
//! hard limit its owning POP lends to the others ([`lease`]), and how an
//! edge spreads its spill over the backends with room ([`spill`]). The NATS
//! adapter that carries reports and lease requests between edges sits
//! outside this crate.

pub mod lease;
pub mod load_board;
pub mod shared;
pub mod spill;

pub use lease::{Admit, Fallback, Grant, Holder, LeaseView, Ledger};
pub use load_board::{LoadBoard, RemoteLoad};
pub use shared::{LeaseGate, LeaseOwner, LeaseSlot};
