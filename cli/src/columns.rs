//! Plain-text tables for `flwr ls` and `flwr supernode list`: left-aligned columns two
//! spaces apart, no trailing blanks, so the output reads on a terminal and diffs cleanly.

/// `rows` (the header first) as aligned lines; every row has the same number of cells.
pub fn render<R: AsRef<[String]>>(rows: &[R]) -> String {
    let columns = rows.first().map_or(0, |r| r.as_ref().len());
    let widths: Vec<usize> = (0..columns)
        .map(|i| rows.iter().map(|r| r.as_ref()[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_and_lines_end_without_blanks() {
        let rows = vec![
            vec!["id".to_owned(), "status".to_owned()],
            vec!["12345".to_owned(), String::new()],
        ];
        assert_eq!(super::render(&rows), "id     status\n12345\n");
    }
}
