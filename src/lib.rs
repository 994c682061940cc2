//! Consentry: a privacy-first consent and compliance gateway.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod admin;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod consent;
pub mod crash_points;
pub mod crypto;
pub mod domain;
pub mod http;
pub mod limits;
pub mod policy;
pub mod profiles;
pub mod rendering;
pub mod scores;
pub mod segmentation;
pub mod startup;
pub mod store;
pub mod subject_requests;
pub mod telemetry;
