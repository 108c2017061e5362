//! How busy the enrollment path is: the admission limit every enrollment and renewal takes a
//! slot of, and what background work reads to stay out of its way.
//!
//! Why a type of its own, low in the layers: the registration authority admits requests with
//! it, and the OCSP responder (a lower layer, which must not see the registration authority)
//! reads it to pre-sign new certificates' responses when the line pauses rather than in the
//! middle of a burst (docs/performance.md).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The enrollment admission limit (`server.max_concurrent_enrollments`) and its occupancy.
#[derive(Clone, Debug)]
pub struct EnrollmentLoad {
    slots: Arc<Semaphore>,
    capacity: usize,
}

impl EnrollmentLoad {
    /// A limit of `capacity` enrollments in progress at once (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// A slot for one enrollment, held until the permit is dropped; an error when all are taken.
    pub fn try_admit(&self) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        Arc::clone(&self.slots).try_acquire_owned()
    }

    /// Enrollments and renewals in progress now.
    pub fn in_flight(&self) -> usize {
        self.capacity.saturating_sub(self.slots.available_permits())
    }

    /// No enrollment in progress.
    pub fn is_idle(&self) -> bool {
        self.in_flight() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_follows_the_permits() {
        let load = EnrollmentLoad::new(2);
        assert!(load.is_idle());
        let a = load.try_admit().expect("first");
        let b = load.try_admit().expect("second");
        assert_eq!(load.in_flight(), 2);
        assert!(load.try_admit().is_err());
        drop(a);
        assert_eq!(load.in_flight(), 1);
        drop(b);
        assert!(load.is_idle());
    }
}
