//! Where AWS credentials come from: one module per source, the default chain
//! of them, and the cache that refreshes them ahead of expiry.
//!
//! The signer asks a `ProvideCredentials` (the trait lives in
//! `aws::identity`, below both the signer and these sources) for credentials
//! before every call; [`refresh::Refreshing`] in front of the chain decides
//! when a source is asked again. This file holds only what the sources share
//! from start-up.

mod chain;
pub mod container;
pub mod environment;
pub mod file;
pub mod imds;
mod ini;
mod json;
pub mod process;
pub mod profile;
pub mod refresh;
pub mod shared_config;
pub mod web_identity;

use std::sync::Arc;

use crate::aws::client::Client;
use crate::aws::sts::Sts;
use crate::aws::transport::Transport;

pub use chain::{default_chain, Chain};

/// What the sources need from start-up: where STS is, how to reach AWS, the
/// metadata client and the profile files.
pub struct Context {
    pub sts_endpoint: String,
    pub region: String,
    /// For the STS clients that sign AssumeRole with a profile's keys.
    pub transport: Transport,
    pub imds: Arc<imds::Imds>,
    pub profiles: Arc<shared_config::Profiles>,
    pub profile_name: String,
    /// Unsigned STS for AssumeRoleWithWebIdentity; one retry budget for all
    /// web identity refreshes.
    pub web_identity_sts: Sts,
}

impl Context {
    pub fn new(
        sts_endpoint: String,
        region: String,
        transport: Transport,
        imds: Arc<imds::Imds>,
        profiles: Arc<shared_config::Profiles>,
        profile_name: String,
    ) -> Context {
        let anonymous = Client::anonymous(transport.clone(), region.clone());
        Context {
            web_identity_sts: Sts::new(Arc::new(anonymous), sts_endpoint.clone()),
            sts_endpoint,
            region,
            transport,
            imds,
            profiles,
            profile_name,
        }
    }
}
