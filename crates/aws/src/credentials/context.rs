//! What the credential sources share from start-up: where STS is, how to
//! reach AWS, the instance metadata client and the shared config files.

use std::sync::Arc;

use super::imds::Imds;
use super::shared_config::Profiles;
use crate::client::Client;
use crate::sts::Sts;
use crate::transport::Transport;

/// What the sources need from start-up: where STS is, how to reach AWS, the
/// metadata client and the profile files.
pub struct Context {
    pub sts_endpoint: String,
    pub region: String,
    /// For the STS clients that sign AssumeRole with a profile's keys.
    pub transport: Transport,
    pub imds: Arc<Imds>,
    pub profiles: Arc<Profiles>,
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
        imds: Arc<Imds>,
        profiles: Arc<Profiles>,
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
