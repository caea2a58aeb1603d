//! Randomness for jitter: retry backoff, credential refresh times and cache
//! refresh-ahead points, so a fleet of agents does not call AWS in lockstep.

/// A uniform float in [0, 1); 0.5 if the OS has no randomness to give
/// (jitter is a courtesy, not a reason to fail).
pub fn unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn stays_in_the_unit_interval_and_varies() {
        let draws: Vec<f64> = (0..100).map(|_| super::unit()).collect();
        assert!(draws.iter().all(|u| (0.0..1.0).contains(u)));
        assert!(draws.iter().any(|u| *u != draws[0]));
    }
}
