//! A tiny aligned-table formatter for CLI output.

use std::fmt::Write as _;

/// Column alignment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Align {
    Left,
    Right,
}

/// Rows of cells printed under a header, columns padded to their widest cell and separated by
/// two spaces. Trailing spaces are trimmed.
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        let headers: Vec<String> = headers.into_iter().map(Into::into).collect();
        let align = vec![Align::Left; headers.len()];
        Self {
            headers,
            align,
            rows: Vec::new(),
        }
    }

    /// Right-aligns the given columns (for numbers).
    pub fn right(mut self, columns: &[usize]) -> Self {
        for &c in columns {
            if let Some(a) = self.align.get_mut(c) {
                *a = Align::Right;
            }
        }
        self
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let mut cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                std::iter::once(&self.headers[c])
                    .chain(self.rows.iter().map(|r| &r[c]))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut s = String::new();
            for (c, cell) in line.iter().enumerate() {
                if c > 0 {
                    s.push_str("  ");
                }
                let pad = widths[c] - cell.chars().count();
                match self.align[c] {
                    Align::Left => {
                        s.push_str(cell);
                        s.push_str(&" ".repeat(pad));
                    }
                    Align::Right => {
                        s.push_str(&" ".repeat(pad));
                        s.push_str(cell);
                    }
                }
            }
            let _ = writeln!(out, "{}", s.trim_end());
        }
        out
    }
}

/// Formats a broker id list as `1,2,3`.
pub fn id_list(ids: &[i32]) -> String {
    ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(["NAME", "PARTITIONS", "REPLICAS"]).right(&[1, 2]);
        t.row(["orders", "12", "3"]);
        t.row(["a", "1", "1"]);
        assert_eq!(
            t.render(),
            "NAME    PARTITIONS  REPLICAS\n\
             orders          12         3\n\
             a                1         1\n"
        );
    }

    #[test]
    fn trims_trailing_space_and_pads_missing_cells() {
        let mut t = Table::new(["A", "B"]);
        t.row(["long-value"]);
        assert_eq!(t.render(), format!("A{}B\nlong-value\n", " ".repeat(11)));
        assert_eq!(id_list(&[1, 2, 3]), "1,2,3");
    }
}
