pub mod audit;
pub mod imports;
pub mod keys;
pub mod oauth;
pub mod policies;
pub mod subjects;
pub mod system;
pub mod tracking;
