//! The patch list as Excel and CSV, in the columns a county fills in.

use super::RETURN_FIELDS;
use crate::engine::patch_record::{patch_values, PATCH_FIELDS};
use crate::engine::patches::Patch;
use crate::error::{Error, Result};
use gdal::vector::FieldValue;
use std::path::Path;

/// Header of every column of the spreadsheet list: the patch fields' Chinese names, then the
/// return fields'.
fn list_headers() -> Vec<&'static str> {
    PATCH_FIELDS
        .iter()
        .map(|(f, _)| f.alias)
        .chain(RETURN_FIELDS.iter().map(|f| f.alias))
        .collect()
}

fn xlsx_error(path: &Path, e: rust_xlsxwriter::XlsxError) -> Error {
    Error::input(path, e.to_string(), "check that the folder is writable")
}

/// `created` is the date the workbook's properties carry: the period's last day in a
/// package, as its zip entries, so that the same package gives the same bytes.
pub(super) fn write_xlsx(path: &Path, patches: &[Patch], created: chrono::NaiveDate) -> Result<()> {
    list_workbook(patches, created)
        .and_then(|mut book| book.save(path))
        .map_err(|e| xlsx_error(path, e))
}

/// The spreadsheet list of `patches` as the bytes of an `.xlsx` file (the portal's download
/// of a filtered list, `created` the day it is asked for).
pub(crate) fn xlsx_bytes(
    patches: &[Patch],
    created: chrono::NaiveDate,
) -> std::result::Result<Vec<u8>, String> {
    list_workbook(patches, created)
        .and_then(|mut book| book.save_to_buffer())
        .map_err(|e| e.to_string())
}

fn list_workbook(
    patches: &[Patch],
    created: chrono::NaiveDate,
) -> std::result::Result<rust_xlsxwriter::Workbook, rust_xlsxwriter::XlsxError> {
    use chrono::Datelike;
    use rust_xlsxwriter::{DataValidation, DocProperties, ExcelDateTime, Format, Workbook};
    let mut book = Workbook::new();
    // Without it the workbook carries the clock's time, and no two packages are alike.
    let day = ExcelDateTime::from_ymd(
        created.year() as u16,
        created.month() as u8,
        created.day() as u8,
    )?;
    book.set_properties(&DocProperties::new().set_creation_datetime(&day));
    let sheet = book.add_worksheet();
    sheet.set_name("图斑清单")?;
    let header = Format::new().set_bold().set_background_color(0xDDEBF7);
    let to_fill = Format::new().set_bold().set_background_color(0xFFF2CC);
    let headers = list_headers();
    for (c, h) in headers.iter().enumerate() {
        let format = if c >= PATCH_FIELDS.len() {
            &to_fill
        } else {
            &header
        };
        sheet.write_string_with_format(0, c as u16, *h, format)?;
        sheet.set_column_width(c as u16, (h.chars().count() * 2 + 2).max(12) as f64)?;
    }
    for (r, p) in patches.iter().enumerate() {
        let row = r as u32 + 1;
        for (c, v) in patch_values(p).into_iter().enumerate() {
            let col = c as u16;
            match v {
                FieldValue::RealValue(x) => sheet.write_number(row, col, x),
                FieldValue::IntegerValue(x) => sheet.write_number(row, col, x),
                FieldValue::StringValue(s) => sheet.write_string(row, col, s),
                other => sheet.write_string(row, col, format!("{other:?}")),
            }?;
        }
    }
    if !patches.is_empty() {
        let last = patches.len() as u32;
        let first_return = PATCH_FIELDS.len() as u16;
        let lists: [(u16, Vec<&str>); 3] = [
            (first_return, crate::ledger::RESULT_VALUES.to_vec()),
            (
                first_return + 1,
                crate::domain::status::Evidence::ALL
                    .map(|e| e.label_zh())
                    .to_vec(),
            ),
            (
                first_return + 2,
                crate::ledger::RECTIFICATION_VALUES.to_vec(),
            ),
        ];
        for (col, values) in lists {
            let rule = DataValidation::new().allow_list_strings(&values)?;
            sheet.add_data_validation(1, col, last, col, &rule)?;
        }
    }
    sheet.set_freeze_panes(1, 1)?;
    Ok(book)
}

pub(super) fn write_csv(path: &Path, patches: &[Patch]) -> Result<()> {
    let err =
        |e: csv::Error| Error::input(path, e.to_string(), "check that the folder is writable");
    let mut bytes = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::Writer::from_writer(&mut bytes);
        w.write_record(list_headers()).map_err(err)?;
        for p in patches {
            let mut row: Vec<String> = patch_values(p)
                .into_iter()
                .map(|v| match v {
                    FieldValue::RealValue(x) => x.to_string(),
                    FieldValue::IntegerValue(x) => x.to_string(),
                    FieldValue::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .collect();
            row.extend(RETURN_FIELDS.iter().map(|_| String::new()));
            w.write_record(&row).map_err(err)?;
        }
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}
