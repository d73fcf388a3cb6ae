//! `report.html`: the totals, the per-township table and the list with thumbnails.

use crate::domain::change::ChangeType;
use crate::domain::period::Period;
use crate::engine::patches::{Patch, SQM_PER_MU};
use crate::error::{Error, Result};
use crate::geo::layers::County;
use std::collections::BTreeMap;
use std::path::Path;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Count and 亩 of each change type per township, for the report; a note when the job gives no
/// township layer.
fn township_table(patches: &[Patch], townships_given: bool) -> String {
    if !townships_given {
        return "<h2>按乡镇汇总</h2>\n<p>任务配置未给出乡镇界线（[townships]），不按乡镇汇总。</p>\n"
            .to_string();
    }
    // Patches outside every township sort last under an explicit label.
    // (outside every township, code) -> (name, (count, m²) per type)
    type Row<'a> = (&'a str, [(usize, f64); 3]);
    let mut rows: BTreeMap<(bool, &str), Row> = BTreeMap::new();
    for p in patches {
        let outside = p.township_code.is_empty();
        let row = rows
            .entry((outside, p.township_code.as_str()))
            .or_insert((p.township_name.as_str(), [(0, 0.0); 3]));
        let t = &mut row.1[p.change as usize - 1];
        t.0 += 1;
        t.1 += p.area_m2;
    }
    let mut h = "<h2>按乡镇汇总</h2>\n<table>\n<tr><th rowspan=\"2\">乡镇</th>".to_string();
    for t in ChangeType::ALL {
        h += &format!("<th colspan=\"2\">{}</th>", t.label_zh());
    }
    h += "<th colspan=\"2\">合计</th></tr>\n<tr>";
    h += &"<th>图斑数</th><th>面积（亩）</th>".repeat(ChangeType::ALL.len() + 1);
    h += "</tr>\n";
    let cells = |counts: &[(usize, f64); 3]| {
        let (n, a) = counts.iter().fold((0, 0.0), |s, c| (s.0 + c.0, s.1 + c.1));
        counts
            .iter()
            .chain(std::iter::once(&(n, a)))
            .map(|(n, a)| {
                format!(
                    "<td class=\"n\">{n}</td><td class=\"n\">{:.2}</td>",
                    a / SQM_PER_MU
                )
            })
            .collect::<String>()
    };
    for ((outside, code), (name, counts)) in &rows {
        let label = if *outside {
            "乡镇界外".to_string()
        } else {
            format!("{}（{}）", escape(name), escape(code))
        };
        h += &format!("<tr><td>{label}</td>{}</tr>\n", cells(counts));
    }
    h += "</table>\n";
    h
}

pub(super) fn write_report(
    path: &Path,
    county: &County,
    period: Period,
    stem: &str,
    patches: &[Patch],
    townships_given: bool,
    clear_share: Option<f64>,
) -> Result<()> {
    let mut by_type: BTreeMap<(u8, &str), (usize, f64, f64, f64)> = BTreeMap::new();
    for p in patches {
        let t = by_type
            .entry((p.change as u8, p.change.label_zh()))
            .or_default();
        t.0 += 1;
        t.1 += p.area_m2;
        t.2 += p.farmland_m2;
        t.3 += p.basic_farmland_m2;
    }
    let mu = |m2: f64| m2 / SQM_PER_MU;
    let mut models: Vec<&str> = patches.iter().map(|p| p.model_version.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let mut h = String::new();
    h += "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n";
    h += &format!(
        "<title>{} {} 耕地变化图斑核查报告</title>\n",
        escape(&county.name),
        period
    );
    h += "<style>body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:left;vertical-align:top}th{background:#ddebf7}td.n{text-align:right}.warn{background:#fff3cd;border-left:4px solid #e0a800;padding:6px 10px}</style>\n</head>\n<body>\n";
    h += &format!(
        "<h1>{}（{}）{} 耕地变化图斑核查报告</h1>\n",
        escape(&county.name),
        escape(&county.code),
        period
    );
    h += &format!(
        "<p>下发图斑 {} 个。模型版本（MXBB）：{}。图斑清单：{stem}.xlsx（填写后用 <code>gengbao ledger import</code> 导入），{stem}.gpkg / .shp / .geojson。</p>\n",
        patches.len(),
        if models.is_empty() { "—".to_string() } else { escape(&models.join(", ")) }
    );
    match clear_share {
        Some(s) if s < 1.0 => {
            h += &format!(
                "<p class=\"warn\">本期晴空影像看到本县监测耕地的 {:.1}%；其余 {:.1}% 被云、云影遮挡或无影像覆盖（总览图上的斜线部分）：那里的变化本期无法发现，不代表没有变化。</p>\n",
                100.0 * s,
                100.0 * (1.0 - s)
            );
        }
        Some(_) => h += "<p>本期晴空影像看到本县全部监测耕地。</p>\n",
        None => {}
    }
    h += "<h2>按类型汇总</h2>\n<table>\n<tr><th>变化类型</th><th>图斑数</th><th>面积（亩）</th><th>其中耕地（亩）</th><th>其中永久基本农田（亩）</th></tr>\n";
    let mut total = (0usize, 0.0, 0.0, 0.0);
    for ((_, label), t) in &by_type {
        h += &format!(
            "<tr><td>{label}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td></tr>\n",
            t.0,
            mu(t.1),
            mu(t.2),
            mu(t.3)
        );
        total = (total.0 + t.0, total.1 + t.1, total.2 + t.2, total.3 + t.3);
    }
    h += &format!(
        "<tr><th>合计</th><th class=\"n\">{}</th><th class=\"n\">{:.2}</th><th class=\"n\">{:.2}</th><th class=\"n\">{:.2}</th></tr>\n</table>\n",
        total.0,
        mu(total.1),
        mu(total.2),
        mu(total.3)
    );
    h += &township_table(patches, townships_given);
    // The map carries its own legend, scale bar and north arrow.
    h += "<h2>总览图</h2>\n<img src=\"overview.png\" alt=\"总览图\" style=\"max-width:100%\">\n";
    h += "<h2>图斑清单</h2>\n<table>\n<tr><th>图斑编号</th><th>乡镇</th><th>变化类型</th><th>前地类 → 后地类</th><th>面积（亩）</th><th>首次发现</th><th>持续期次</th><th>置信度</th><th>经度, 纬度</th><th>状态</th><th>影像（前 / 后）</th></tr>\n";
    for p in patches {
        h += &format!(
            "<tr><td>{tbbh}</td><td>{}</td><td>{}</td><td>{} → {}</td><td class=\"n\">{:.2}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td>{:.6}, {:.6}</td><td>{}</td><td><a href=\"chips/{tbbh}.png\"><img src=\"chips/{tbbh}.png\" alt=\"{tbbh}\" width=\"320\"></a></td></tr>\n",
            escape(&p.township_name),
            p.change.label_zh(),
            p.before.label_zh(),
            p.after.label_zh(),
            p.area_mu,
            escape(&p.first_seen),
            p.persisted,
            p.confidence,
            p.lon_lat.0,
            p.lon_lat.1,
            p.status.label_zh(),
            tbbh = escape(&p.tbbh),
        );
    }
    h += "</table>\n</body>\n</html>\n";
    std::fs::write(path, h).map_err(|e| Error::io(path, e))
}
