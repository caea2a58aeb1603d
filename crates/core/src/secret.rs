//! Secret bytes that are overwritten when they are dropped: evicted or
//! replaced cache entries, finished responses, and the cache at exit.

use std::fmt;
use std::ops::Deref;

use zeroize::Zeroize;

/// A buffer holding secret material (a rendered GetSecretValue body). Its
/// memory, spare capacity included, is zeroed on drop. `Debug` shows only
/// the length.
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(bytes)
    }

    /// Bytes allocated beyond the content (the tests of the services check
    /// that a cached answer keeps none).
    pub fn spare_capacity(&self) -> usize {
        self.0.capacity() - self.0.len()
    }

    /// Overwrites the bytes now (the buffer stays allocated, all zero).
    /// In place, not `Vec::zeroize`: that also truncates the vector to empty,
    /// which would leave nothing to show that the bytes were overwritten.
    pub fn wipe(&mut self) {
        self.0.as_mut_slice().zeroize();
        self.0.spare_capacity_mut().zeroize();
    }
}

impl Deref for SecretBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wipes_and_hides() {
        let mut s = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(&*s, b"hunter2");
        assert_eq!(format!("{s:?}"), "SecretBytes(7 bytes)");
        s.wipe();
        assert_eq!(s.len(), 7, "the length is kept");
        assert!(s.iter().all(|&b| b == 0), "{:?}", &*s);
    }
}
