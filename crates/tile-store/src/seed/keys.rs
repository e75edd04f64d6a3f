//! Where a seed lives in the state store: its record `{prefix}seed:{id}`, the sets
//! `{prefix}seed:{id}:done` / `:failed` of its finished tiles, the registry `{prefix}seeds`,
//! and the progress sample's hash `{prefix}seed-progress`. The admission, take-over and
//! progress scripts build record keys themselves, as prefix .. `seed:` .. id.

use super::record::SeedOutcome;

/// Key names in the state store.
#[derive(Debug, Clone)]
pub(super) struct SeedKeys {
    pub(super) prefix: String,
}

impl SeedKeys {
    /// A seed's record.
    pub(super) fn seed(&self, id: &str) -> String {
        format!("{}seed:{id}", self.prefix)
    }

    /// The ids of the seeds that may still have work (see [`super::SeedStore::seed_admit`]).
    pub(super) fn registry(&self) -> String {
        format!("{}seeds", self.prefix)
    }

    /// The progress sample's hash: the period sampled last, and each running seed's finished
    /// tiles then (see [`super::SeedStore::seed_progress_sample`]).
    pub(super) fn progress(&self) -> String {
        format!("{}seed-progress", self.prefix)
    }

    /// The set of a seed's tiles that ended as `outcome`.
    pub(super) fn tiles(&self, id: &str, outcome: SeedOutcome) -> String {
        format!("{}seed:{id}:{}", self.prefix, outcome.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_keys_carry_the_prefix_and_the_id() {
        let keys = SeedKeys {
            prefix: "fractile:".into(),
        };
        assert_eq!(keys.seed("ab"), "fractile:seed:ab");
        assert_eq!(keys.registry(), "fractile:seeds");
        assert_eq!(keys.progress(), "fractile:seed-progress");
        assert_eq!(keys.tiles("ab", SeedOutcome::Done), "fractile:seed:ab:done");
        assert_eq!(
            keys.tiles("ab", SeedOutcome::Failed),
            "fractile:seed:ab:failed"
        );
        // The admission and take-over scripts build record keys as prefix .. 'seed:' .. id.
        assert_eq!(keys.seed("ab"), format!("{}seed:{}", keys.prefix, "ab"));
    }
}
