//! Key names (contract §2): which characters a name may hold, the one form
//! in which names are compared for uniqueness, and the unique-name index
//! built from that form.
//!
//! A name is signed into every token of its key and shown to people, so it
//! must not be able to look like another key's name. Two rules keep it so:
//!
//! - Characters of the Unicode general categories Cc (controls), Cf (format
//!   characters: zero-width spaces and joiners, bidi overrides and isolates,
//!   soft hyphens...), Zl and Zp (line and paragraph separators) are refused:
//!   they are invisible or reorder what is shown around them.
//! - Uniqueness compares [`fold_name`]: NFKC, full Unicode case folding, NFKC
//!   again, with default-ignorable code points removed. `BOOTSTRAP-ADMIN`,
//!   `ｂｏｏｔｓｔｒａｐ-ａｄｍｉｎ` (full-width) and `bootstrap-admin` are one name.
//!
//! The store's unique-name index maps that folded form to the key id (the
//! sled engine rebuilds an index of an older layout when it opens a data
//! directory, so existing keys keep their names, whatever they fold to).

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::{DefaultIgnorableCodePoint, GeneralCategory};
use icu_properties::{CodePointMapData, CodePointSetData};

/// The form in which two names are compared: equal folded forms are the
/// same name. NFKC maps compatibility forms (full-width letters, ligatures,
/// circled digits...) to their plain form, full case folding removes letter
/// case (`ß` = `ss`), and the second NFKC puts the folded text back in
/// normal form; default-ignorable code points (which only names from before
/// the character rules can hold) are dropped.
pub fn fold_name(name: &str) -> String {
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    let normal = nfkc.normalize(name);
    let visible: String = normal.chars().filter(|c| !ignorable.contains(*c)).collect();
    let folded = CaseMapper::new().fold_string(&visible);
    nfkc.normalize(&folded).into_owned()
}

/// A character a name may not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForbiddenChar {
    /// Position in the name, counting characters from 1.
    pub position: usize,
    pub character: char,
    /// What kind of character it is, for the message.
    pub kind: &'static str,
}

impl std::fmt::Display for ForbiddenChar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "U+{:04X} at position {} is a {}",
            u32::from(self.character),
            self.position,
            self.kind
        )
    }
}

/// The first character of `name` in a forbidden category, if any.
pub fn first_forbidden(name: &str) -> Option<ForbiddenChar> {
    let categories = CodePointMapData::<GeneralCategory>::new();
    name.chars().enumerate().find_map(|(i, character)| {
        let kind = match categories.get(character) {
            GeneralCategory::Control => "control character (Cc)",
            GeneralCategory::Format => {
                "format character (Cf), invisible or changing text direction"
            }
            GeneralCategory::LineSeparator => "line separator (Zl)",
            GeneralCategory::ParagraphSeparator => "paragraph separator (Zp)",
            _ => return None,
        };
        Some(ForbiddenChar {
            position: i + 1,
            character,
            kind,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_compatibility_forms_fold_together() {
        let plain = fold_name("bootstrap-admin");
        assert_eq!(plain, "bootstrap-admin");
        assert_eq!(fold_name("BOOTSTRAP-ADMIN"), plain);
        assert_eq!(fold_name("ｂｏｏｔｓｔｒａｐ-ａｄｍｉｎ"), plain);
        assert_eq!(fold_name("Ｂｏｏｔｓｔｒａｐ-Ａｄｍｉｎ"), plain);
        // Only a name from before the character rules can hold this.
        assert_eq!(fold_name("bootstrap\u{200B}-admin"), plain);
        assert_eq!(fold_name("Straße"), fold_name("STRASSE"));
        assert_eq!(fold_name("ﬁle"), fold_name("FILE"));
        // Precomposed and decomposed accents are one name.
        assert_eq!(fold_name("caf\u{e9}"), fold_name("cafe\u{301}"));
        assert_ne!(fold_name("café"), fold_name("cafe"));
        assert_eq!(fold_name("日本語キー"), "日本語キー");
    }

    #[test]
    fn folding_is_stable() {
        for name in ["ǅungla", "ΣΊΣΥΦΟΣ", "ﬃ", "Ⅻ-reader", "ｶﾀｶﾅ", "İstanbul"]
        {
            let once = fold_name(name);
            assert_eq!(fold_name(&once), once, "{name}");
        }
    }

    #[test]
    fn forbidden_categories_are_found_with_their_position() {
        let cases = [
            ("a\u{7}b", 2, 0x7),
            ("bootstrap\u{200B}-admin", 10, 0x200B),
            ("\u{202E}evil", 1, 0x202E),
            ("left\u{2066}iso", 5, 0x2066),
            ("soft\u{AD}hyphen", 5, 0xAD),
            ("line\u{2028}sep", 5, 0x2028),
            ("para\u{2029}sep", 5, 0x2029),
            ("日本\u{FEFF}", 3, 0xFEFF),
        ];
        for (name, position, code) in cases {
            let found = first_forbidden(name).unwrap_or_else(|| panic!("{name:?} passed"));
            assert_eq!(found.position, position, "{name:?}");
            assert_eq!(u32::from(found.character), code, "{name:?}");
            assert!(
                found
                    .to_string()
                    .starts_with(&format!("U+{code:04X} at position {position}")),
                "{found}"
            );
        }
        for name in ["café-reader", "日本語キー", "ops bot (eu)", "Ωmega_1.2"] {
            assert_eq!(first_forbidden(name), None, "{name:?}");
        }
    }
}
