//! lethe: a GDPR retention and erasure engine for CRM data and the technical
//! data behind it. See ARCHITECTURE.md for the code map and its invariants.
//!
//! The pipeline, one module per stage: [`index`] → [`evaluate`] → [`plan`] →
//! [`apply`] → [`verify`] → [`audit`]; the backends behind traits in [`crm`],
//! [`store`] and [`state`]; [`pipeline`] composes the stages once for the
//! command line ([`cli`]), the service ([`serve`]) and the demo.

pub mod apply;
pub mod audit;
pub mod cli;
pub mod config;
pub mod crm;
pub mod demo;
pub mod error;
pub mod evaluate;
pub mod holds;
pub mod index;
pub mod model;
pub mod pipeline;
pub mod plan;
pub mod report;
pub mod request;
pub mod sensitive;
pub mod serve;
pub mod state;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod verify;
