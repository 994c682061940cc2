//! The integration tests: each spawns the real gateway on port 0 against its own database.
mod architecture;
mod audit;
mod auth;
mod authorization;
mod cli;
mod consents;
mod crash;
mod dsar;
mod errors;
mod gate;
mod health;
mod helpers;
mod identity;
mod imports;
mod keys;
mod policies;
mod tracking;
