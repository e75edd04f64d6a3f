//! The open-file limit, and what it leaves for connections.
//!
//! Every open connection is a file descriptor. With the usual soft `RLIMIT_NOFILE` of 1024
//! (a leftover of `select(2)`), a few hundred slow clients could take every descriptor, and
//! then `accept` fails for everyone, the admin port's probes included, and so do new Redis
//! connections and file opens. So at start-up a process raises its soft limit to the hard
//! one, as Go's runtime does for every program (the hard limit is the operator's decision;
//! the soft one is only a default), and then checks that its connection caps fit under it
//! with room for everything else. A cap that does not fit is lowered, with a warning saying
//! so, rather than refused: a container runtime's limit is not always the operator's to
//! change, and a lower cap still serves.

use std::num::NonZeroUsize;

/// Descriptors kept for everything that is not a connection of a capped listener: the
/// listeners themselves, the runtime's epoll and wake-up descriptors, standard streams, the
/// RabbitMQ connection, Redis's pub/sub connection, files read under /proc, with room to
/// spare. Pooled Redis connections are added by the caller.
pub const RESERVED_FDS: u64 = 128;

/// Raises the soft open-file limit to the hard limit, and returns the soft limit now in
/// force (`None` where it cannot be read, and then nothing is checked).
pub fn raise_nofile_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-file limit");
            None
        }
    }
}

/// The connection cap that fits: `wanted`, unless `wanted + others + RESERVED_FDS` exceeds
/// `nofile`, in which case what is left under `nofile` (logged as a warning). `others` are
/// the descriptors the process holds beside this listener's connections (other listeners'
/// caps, a connection pool). `Err` when not even one connection fits.
pub fn fit_connections(
    listener: &str,
    wanted: NonZeroUsize,
    others: usize,
    nofile: Option<u64>,
) -> Result<NonZeroUsize, String> {
    let Some(nofile) = nofile else {
        return Ok(wanted);
    };
    let others = u64::try_from(others).unwrap_or(u64::MAX);
    let room = nofile.saturating_sub(others.saturating_add(RESERVED_FDS));
    let wanted_u64 = u64::try_from(wanted.get()).unwrap_or(u64::MAX);
    if wanted_u64 <= room {
        return Ok(wanted);
    }
    let fitted = usize::try_from(room)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| {
            format!(
                "the open-file limit {nofile} leaves no descriptor for {listener} connections \
                 ({others} held elsewhere, {RESERVED_FDS} reserved); raise `ulimit -n`"
            )
        })?;
    tracing::warn!(
        listener,
        wanted = wanted.get(),
        fitted = fitted.get(),
        nofile,
        "connection cap lowered to fit the open-file limit; raise `ulimit -n` (the hard limit) to keep it"
    );
    Ok(fitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: usize) -> NonZeroUsize {
        NonZeroUsize::new(v).expect("non-zero")
    }

    #[test]
    fn a_cap_that_fits_is_kept() {
        assert_eq!(fit_connections("t", n(4096), 80, Some(65_536)), Ok(n(4096)));
        assert_eq!(fit_connections("t", n(4096), 80, None), Ok(n(4096)));
    }

    #[test]
    fn a_cap_beyond_the_limit_is_lowered_to_leave_the_reserve() {
        // 1024 descriptors, 64 admin connections and 16 pooled Redis connections elsewhere.
        let fitted = fit_connections("t", n(4096), 80, Some(1024));
        assert_eq!(fitted, Ok(n(1024 - 80 - RESERVED_FDS as usize)));
    }

    #[test]
    fn no_room_at_all_is_an_error() {
        assert!(fit_connections("t", n(10), 80, Some(100)).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let Ok((_, hard)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
            panic!("RLIMIT_NOFILE is readable on unix");
        };
        let raised = raise_nofile_limit();
        assert_eq!(raised, Some(hard));
    }
}
