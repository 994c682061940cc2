pub mod audit;
pub mod keys;
pub mod oauth;
pub mod system;
pub mod tracking;
