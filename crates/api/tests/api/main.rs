//! The api's behaviour, tested through its HTTP surface: `oneshot` calls for the contract,
//! a real server on port 0 for sockets, shutdown and the binary itself.

mod admission;
mod cache;
mod contract;
mod exits;
mod helpers;
mod lifecycle;
mod refusals;
