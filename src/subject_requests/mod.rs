//! Data-subject rights: requests as a state machine with their legal deadlines
//! (`requests`), and restriction of processing (Art. 18). Execution of each kind
//! (access packages, erasure, rectification, notices) builds on these.
pub mod requests;
pub mod restriction;
