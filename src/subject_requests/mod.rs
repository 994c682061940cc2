//! Data-subject rights: requests as a state machine with their legal deadlines
//! (`requests`), their execution (`execute`: access and portability packages, erasure,
//! restriction, objection) and restriction of processing (Art. 18).
pub mod codes;
pub mod execute;
pub mod flags;
pub mod notices;
pub mod package;
pub mod rectify;
pub mod requests;
pub mod retention;
