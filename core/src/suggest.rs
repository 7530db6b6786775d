//! "Did you mean": the one rule that picks, among the names a user could have meant, the
//! one closest to a name that was not found (run-config keys, federations, templates).
//!
//! A typo is a small edit, so the rule is the edit distance (Levenshtein, case-insensitive):
//! the closest known name wins when it is within a third of the name's length (at least 1),
//! and a tie goes to the name listed first. Renames are not typos: a name Flower renamed is
//! matched through [`RENAMED`] first, so that a tutorial written for one Flower version
//! points at the name an app written for another one uses.

/// Names Flower has renamed, both ways round: Flower 1.21's Message API strategies sample
/// with `fraction_train` what Flower 1.18's templates called `fraction-fit`.
const RENAMED: [(&str, &str); 1] = [("fraction-fit", "fraction-train")];

/// The known name `given` most likely meant, or `None` when nothing is close.
pub fn closest<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let given_lower = given.to_lowercase();
    let renamed = |name: &str| {
        RENAMED.iter().any(|&(a, b)| {
            (a == given_lower && b == name.to_lowercase())
                || (b == given_lower && a == name.to_lowercase())
        })
    };
    let limit = (given.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for name in known {
        let distance = if renamed(name) {
            0
        } else {
            edit_distance(&given_lower, &name.to_lowercase())
        };
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, name));
        }
    }
    best.map(|(_, name)| name)
}

/// `" (did you mean `NAME`?)"` for the closest known name, or `""`: the fragment error
/// messages append after the unknown name.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    closest(given, known)
        .map(|name| format!(" (did you mean `{name}`?)"))
        .unwrap_or_default()
}

/// Levenshtein distance in characters: the fewest insertions, deletions and substitutions
/// that turn `a` into `b`.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 5] = [
        "num-server-rounds",
        "fraction-fit",
        "fraction-evaluate",
        "local-epochs",
        "lr",
    ];

    #[test]
    fn edit_distance_counts_insertions_deletions_and_substitutions() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("lr", "rl"), 2);
        assert_eq!(edit_distance("épochs", "epochs"), 1);
    }

    #[test]
    fn a_typo_finds_the_key_it_was_meant_for() {
        assert_eq!(closest("num-server-round", KEYS), Some("num-server-rounds"));
        assert_eq!(closest("fraction-fitt", KEYS), Some("fraction-fit"));
        assert_eq!(closest("Local-Epochs", KEYS), Some("local-epochs"));
        assert_eq!(
            closest("fraction_evaluate", KEYS),
            Some("fraction-evaluate")
        );
        assert_eq!(closest("l", KEYS), Some("lr"));
    }

    #[test]
    fn a_renamed_flower_key_finds_its_other_name() {
        assert_eq!(closest("fraction-train", KEYS), Some("fraction-fit"));
        let newer = ["num-server-rounds", "fraction-train", "lr"];
        assert_eq!(closest("fraction-fit", newer), Some("fraction-train"));
    }

    #[test]
    fn nothing_close_suggests_nothing() {
        assert_eq!(closest("batch-size", KEYS), None);
        assert_eq!(closest("num-rounds", KEYS), None);
        assert_eq!(closest("x", ["lr", "y"]), Some("y"));
        assert_eq!(closest("anything", []), None);
        assert_eq!(did_you_mean("batch-size", KEYS), "");
        assert_eq!(
            did_you_mean("lrr", KEYS),
            " (did you mean `lr`?)".to_owned()
        );
    }

    #[test]
    fn a_tie_goes_to_the_name_listed_first() {
        assert_eq!(closest("ab", ["ax", "ay"]), Some("ax"));
    }
}
