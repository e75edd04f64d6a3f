//! The api's behaviour, tested through its HTTP surface: `oneshot` calls for the contract,
//! a real server on port 0 for sockets, shutdown and the binary itself.

mod admission;
mod cache;
mod connections;
mod contract;
mod cors;
mod exits;
mod faults;
mod helpers;
mod lifecycle;
mod metadata;
mod openapi;
mod pages;
mod refusals;
mod seed_access;
