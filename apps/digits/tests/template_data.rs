//! The `ndarray` template of `flwr new` ships smartcore's digits as a text file of its own
//! (`cli/templates/ndarray/data/digits.txt`), so that a user's app needs no smartcore. This
//! test is where that file comes from: it checks the file is smartcore's data, and writes
//! it afresh with `FLORET_WRITE_TEMPLATE_DATA=1 cargo test -p floret-app-digits --test
//! template_data`.

// Tests may unwrap (a failure is the test failing).
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// The template's data file, from this crate's directory.
const TEMPLATE_DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../cli/templates/ndarray/data/digits.txt"
);

/// One line per image: its digit, a space, and its 64 pixels row by row, each pixel's
/// ink (0 ..= 16) as one base-17 digit (`0`-`9`, `a`-`g`). One byte a pixel keeps the file
/// at about 120 KB, a third of a CSV's size.
fn render() -> String {
    let raw = smartcore::dataset::digits::load_dataset();
    assert_eq!((raw.num_samples, raw.num_features), (1797, 64));
    let mut text = String::with_capacity(raw.num_samples * 67);
    for (pixels, label) in raw.data.chunks(raw.num_features).zip(&raw.target) {
        text.push(char::from_digit(*label as u32, 10).unwrap());
        text.push(' ');
        for &ink in pixels {
            assert!(ink.fract() == 0.0 && (0.0..=16.0).contains(&ink), "{ink}");
            text.push(char::from_digit(ink as u32, 17).unwrap());
        }
        text.push('\n');
    }
    text
}

#[test]
fn the_ndarray_templates_digits_are_smartcores() {
    let expected = render();
    if std::env::var_os("FLORET_WRITE_TEMPLATE_DATA").is_some() {
        std::fs::write(TEMPLATE_DATA, &expected).unwrap();
    }
    let shipped = std::fs::read_to_string(Path::new(TEMPLATE_DATA)).unwrap();
    assert!(
        shipped == expected,
        "{TEMPLATE_DATA} is not smartcore's digits: rewrite it with FLORET_WRITE_TEMPLATE_DATA=1"
    );
}
