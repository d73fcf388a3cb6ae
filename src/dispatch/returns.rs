//! Reading back what a county returns (the Excel or CSV list, filled in).

use super::RETURN_FIELDS;
use crate::error::{Error, Result};
use crate::ledger::ReturnRow;
use gdal::vector::LayerAccess;
use std::path::Path;

/// The column of each return field in a header row: by Chinese name or ASCII name.
fn columns(headers: &[String], path: &Path) -> Result<(usize, [Option<usize>; 5])> {
    let find = |ascii: &str, alias: &str| {
        headers
            .iter()
            .position(|h| h.trim() == ascii || h.trim() == alias)
    };
    let tbbh = find("TBBH", "图斑编号").ok_or_else(|| {
        Error::input(
            path,
            "no 图斑编号 (TBBH) column",
            "import the list of a dispatch package, filled in, with its header row",
        )
    })?;
    let fields = RETURN_FIELDS.map(|f| find(f.name, f.alias));
    if fields.iter().all(Option::is_none) {
        return Err(Error::input(
            path,
            "none of the return columns 核查结果 / 举证类型 / 整改状态 / 备注 / 附件",
            "import the list of a dispatch package, filled in, with its header row",
        ));
    }
    Ok((tbbh, fields))
}

fn to_row(row: usize, cells: &[String], tbbh: usize, fields: &[Option<usize>; 5]) -> ReturnRow {
    let get = |c: Option<usize>| {
        c.and_then(|c| cells.get(c))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    ReturnRow {
        row,
        tbbh: get(Some(tbbh)),
        result: get(fields[0]),
        evidence: get(fields[1]),
        rectification: get(fields[2]),
        note: get(fields[3]),
        attachments: get(fields[4])
            .split([';', '；', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    }
}

/// A spreadsheet cell as the inspector typed it. A date typed into a text column (备注) is
/// stored by Excel as a day number: it reads back as `YYYY-MM-DD`, not `46145`.
fn cell_text(cell: &calamine::Data) -> String {
    use calamine::DataType;
    if cell.is_datetime() || cell.is_datetime_iso() {
        if let Some(at) = cell.as_datetime() {
            return if at.time() == chrono::NaiveTime::MIN {
                at.format("%Y-%m-%d").to_string()
            } else {
                at.format("%Y-%m-%d %H:%M").to_string()
            };
        }
    }
    cell.to_string()
}

/// The text of a returned CSV: UTF-8 (with or without a BOM), or GBK as Chinese Excel saves
/// "CSV (逗号分隔)"; anything else is refused rather than read as mojibake.
fn csv_text(path: &Path, bytes: &[u8]) -> Result<String> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok(text.to_string());
    }
    let (text, _, malformed) = encoding_rs::GB18030.decode(bytes);
    if malformed {
        return Err(Error::input(
            path,
            "is neither UTF-8 nor GBK text",
            "save it from Excel as \"CSV UTF-8 (逗号分隔)\" or as .xlsx",
        ));
    }
    Ok(text.into_owned())
}

/// Reads a county's returned results: the package's Excel list, its CSV twin, or its
/// GeoPackage, filled in. Rows are numbered as the spreadsheet shows them (header = row 1);
/// a GeoPackage's by feature id.
pub fn read_returns(path: &Path) -> Result<Vec<ReturnRow>> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let unreadable = |e: String| {
        Error::input(
            path,
            format!("cannot read the file: {e}"),
            "save it again as .xlsx, .csv (UTF-8) or .gpkg",
        )
    };
    let mut rows = Vec::new();
    match ext.as_str() {
        "xlsx" | "xls" | "xlsm" | "ods" => {
            use calamine::Reader;
            let mut book =
                calamine::open_workbook_auto(path).map_err(|e| unreadable(e.to_string()))?;
            let range = book
                .worksheet_range_at(0)
                .ok_or_else(|| unreadable("no worksheet".into()))?
                .map_err(|e| unreadable(e.to_string()))?;
            let mut lines = range
                .rows()
                .map(|r| r.iter().map(cell_text).collect::<Vec<String>>());
            let headers = lines.next().unwrap_or_default();
            let (tbbh, fields) = columns(&headers, path)?;
            for (k, cells) in lines.enumerate() {
                if cells.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                rows.push(to_row(k + 2, &cells, tbbh, &fields));
            }
        }
        "csv" => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            let text = csv_text(path, &bytes)?;
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .has_headers(false)
                .from_reader(text.as_bytes());
            let mut records = reader.records();
            let headers: Vec<String> = match records.next() {
                Some(r) => r
                    .map_err(|e| unreadable(e.to_string()))?
                    .iter()
                    .map(|h| h.trim_start_matches('\u{feff}').to_string())
                    .collect(),
                None => Vec::new(),
            };
            let (tbbh, fields) = columns(&headers, path)?;
            for (k, r) in records.enumerate() {
                let cells: Vec<String> = r
                    .map_err(|e| unreadable(format!("row {}: {e}", k + 2)))?
                    .iter()
                    .map(String::from)
                    .collect();
                if cells.iter().all(|c| c.trim().is_empty()) {
                    continue;
                }
                rows.push(to_row(k + 2, &cells, tbbh, &fields));
            }
        }
        "gpkg" => {
            let ds = gdal::Dataset::open(path).map_err(|e| unreadable(e.to_string()))?;
            let mut layer = ds.layer(0).map_err(|e| unreadable(e.to_string()))?;
            let headers: Vec<String> = layer.defn().fields().map(|f| f.name()).collect();
            let (tbbh, fields) = columns(&headers, path)?;
            for f in layer.features() {
                let cells = (0..headers.len())
                    .map(|i| f.field_as_string(i).map(Option::unwrap_or_default))
                    .collect::<std::result::Result<Vec<String>, _>>()
                    .map_err(|e| unreadable(e.to_string()))?;
                rows.push(to_row(f.fid().unwrap_or(0) as usize, &cells, tbbh, &fields));
            }
        }
        other => {
            return Err(Error::input(
                path,
                format!("`.{other}` is not a returned-results format"),
                "import the package's .xlsx, .csv or .gpkg, filled in",
            ))
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(100))]
        /// Any bytes saved as a returned CSV give rows or a clean error naming the file.
        #[test]
        fn any_returned_csv_gives_rows_or_a_clean_error(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            header in proptest::bool::ANY,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("returns.csv");
            let mut bytes = if header {
                "图斑编号,核查结果,备注\n".as_bytes().to_vec()
            } else {
                Vec::new()
            };
            bytes.extend(body);
            std::fs::write(&path, &bytes).unwrap();
            if let Err(e) = read_returns(&path) {
                proptest::prop_assert!(e.to_string().contains("returns.csv"), "{}", e);
            }
        }
    }
}
