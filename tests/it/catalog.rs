//! The imagery catalog finds acquisitions by the naming of real products, dates them from
//! their own names, and the sample generator never deletes a folder it did not make.

use crate::common::geotiff;
use gengbao::geo::imagery::Catalog;
use gengbao::geo::sensor::SensorProfile;
use gengbao::samples::{generate, SampleOptions};
use std::fs;
use std::path::Path;

fn tiny_tif(path: &Path) {
    geotiff(path, 4, 1, 30.0, |_, _| 0);
}

#[test]
fn landsat_collection_2_folders_are_catalogued() {
    let tmp = tempfile::tempdir().unwrap();
    // The delivery folder's own date must not date the scene.
    let scene = tmp
        .path()
        .join("delivery_20241231")
        .join("LT05_L2SP_119038_20050713_20200902_02_T1");
    fs::create_dir_all(&scene).unwrap();
    for band in [
        "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7", "QA_PIXEL",
    ] {
        tiny_tif(&scene.join(format!(
            "LT05_L2SP_119038_20050713_20200902_02_T1_{band}.TIF"
        )));
    }
    let profile = SensorProfile::by_name("landsat-tm-sr").unwrap();
    let cat = Catalog::scan(tmp.path(), profile, &Default::default()).unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    let a = &cat.acquisitions[0];
    assert_eq!(
        a.date.to_string(),
        "2005-07-13",
        "dated by the scene, not the delivery folder"
    );
    assert_eq!(a.files.len(), 7);
    assert!(a.files["SR_B1"].to_string_lossy().ends_with("_SR_B1.TIF"));
    assert_eq!(a.offset, None, "without an MTL file, the profile's offset");

    // An unpacked scene's MTL file (the JSON form) dates and scales it as its tar's would.
    let mtl = scene.join("LT05_L2SP_119038_20050713_20200902_02_T1_MTL.json");
    let mut levels = serde_json::Map::new();
    for b in [1, 2, 3, 4, 5, 7] {
        levels.insert(format!("REFLECTANCE_MULT_BAND_{b}"), "2.75E-05".into());
        levels.insert(format!("REFLECTANCE_ADD_BAND_{b}"), "-0.200000".into());
    }
    let json = serde_json::json!({"LANDSAT_METADATA_FILE": {
        "IMAGE_ATTRIBUTES": {"SPACECRAFT_ID": "LANDSAT_5", "DATE_ACQUIRED": "2005-07-13"},
        "LEVEL2_SURFACE_REFLECTANCE_PARAMETERS": levels,
    }});
    fs::write(&mtl, json.to_string()).unwrap();
    let cat = Catalog::scan(tmp.path(), profile, &Default::default()).unwrap();
    assert_eq!(cat.acquisitions[0].offset, Some(profile.add_offset));
    // A Landsat 8 scene in a TM job is named with the profile to set, not read as TM bands.
    fs::write(&mtl, json.to_string().replace("LANDSAT_5", "LANDSAT_8")).unwrap();
    let err = Catalog::scan(tmp.path(), profile, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LANDSAT_8") && err.contains("landsat-oli-sr"),
        "{err}"
    );
    // One that does not state the date is named, and the scene left out.
    fs::write(
        &mtl,
        json.to_string().replace("DATE_ACQUIRED", "DATE_PRODUCED"),
    )
    .unwrap();
    let err = Catalog::scan(tmp.path(), profile, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("_MTL.json does not state DATE_ACQUIRED"),
        "{err}"
    );
    fs::remove_file(&mtl).unwrap();
    // A missing band is named.
    fs::remove_file(scene.join("LT05_L2SP_119038_20050713_20200902_02_T1_SR_B5.TIF")).unwrap();
    let err = Catalog::scan(tmp.path(), profile, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing band file SR_B5"), "{err}");
}

#[test]
fn sentinel2_band_names_do_not_match_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let acq = tmp
        .path()
        .join("S2A_MSIL2A_20250412T030551_N0511_R075_T50SKE_20250412T064531");
    fs::create_dir_all(&acq).unwrap();
    for band in [
        "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12", "SCL",
    ] {
        tiny_tif(&acq.join(format!("T50SKE_20250412T030551_{band}_20m.jp2.tif")));
    }
    let cat = Catalog::scan(
        tmp.path(),
        SensorProfile::by_name("sentinel2-l2a").unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    assert_eq!(cat.acquisitions[0].date.to_string(), "2025-04-12");
    assert!(cat.acquisitions[0].files["B08"]
        .to_string_lossy()
        .contains("_B08_"));
}

#[test]
fn samples_never_delete_a_folder_they_did_not_make() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("my_data");
    fs::create_dir_all(&mine).unwrap();
    fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let opts = SampleOptions {
        size: 128,
        periods: 3,
        ..Default::default()
    };
    let err = generate(&mine, &opts)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(
        err.contains("my_data") && err.contains("not a sample city"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep me"
    );
    // A previous sample city is replaced, and nothing is left beside it.
    let city = tmp.path().join("city");
    generate(&city, &opts).unwrap();
    generate(&city, &opts).unwrap();
    let mut names: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["city", "my_data"]);
}

#[test]
fn fill_values_of_untagged_band_files_never_blend_into_real_pixels() {
    use gengbao::geo::grid::JobGrid;
    use gengbao::geo::raster::{warp_onto, Resample};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("B11_20m.tif");
    // A 20 m band without a nodata tag: left half fill (0), right half 3000.
    geotiff(&path, 8, 1, 20.0, |_, i| if i % 8 < 4 { 0 } else { 3000 });
    let grid = JobGrid {
        crs_wkt: gdal::spatial_ref::SpatialRef::from_epsg(32650)
            .unwrap()
            .to_wkt()
            .unwrap(),
        origin_x: 500000.0,
        origin_y: 3500000.0,
        resolution: 10.0,
        width: 16,
        height: 16,
        tile_size: 16,
        halo: 0,
    };
    let warp = |nodata| {
        warp_onto(&path, &grid, grid.full_window(), Resample::Bilinear, nodata)
            .unwrap()
            .into_raw_vec()
    };
    let blended = |v: &[f32]| v.iter().filter(|x| !x.is_nan() && **x != 3000.0).count();
    // Without the product's nodata value, bilinear resampling mixes the fill into the edge.
    assert!(
        blended(&warp(None)) > 0,
        "the fixture no longer shows the problem"
    );
    let out = warp(Some(0.0));
    assert!(
        out.iter().all(|v| v.is_nan() || *v == 3000.0),
        "blended values: {:?}",
        out.iter()
            .filter(|v| !v.is_nan() && **v != 3000.0)
            .collect::<Vec<_>>()
    );
    assert!(
        out.iter().filter(|v| **v == 3000.0).count() >= 16 * 7,
        "the valid half is kept"
    );
}

/// Acquisition folders of Sentinel-2 L2A band files (the generated city's, or real bands laid
/// out as a job) repackaged as Level-2A products as the hubs deliver them:
/// `<product>.SAFE/GRANULE/<granule>/IMG_DATA/R10m|R20m|R60m/*.jp2` (lossless JPEG 2000) with
/// `MTD_MSIL2A.xml`, a zip of it for the products `zipped` picks, and a product of processing
/// baseline 02.06 (no offset in its DNs or its metadata) for those `old` picks; the others
/// are of baseline 05.11, whose DNs carry +1000. `source_offset` is the DN offset of the band
/// files (-1000 for the generated city's, 0 for products older than 2022). Every product
/// also holds a 60 m blue band of nonsense, which the 10 m one must win over. Returns the
/// number of products.
pub(crate) fn as_safe_products(
    from: &Path,
    to: &Path,
    source_offset: i32,
    zipped: impl Fn(usize) -> bool,
    old: impl Fn(usize) -> bool,
) -> usize {
    let jp2 = gdal::DriverManager::get_driver_by_name("JP2OpenJPEG").unwrap();
    let mem = gdal::DriverManager::get_driver_by_name("MEM").unwrap();
    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let mut folders = crate::common::entries(from);
    folders.retain(|f| f.is_dir());
    fs::create_dir_all(to).unwrap();
    for (k, folder) in folders.iter().enumerate() {
        // S2B_MSIL2A_20250107T030549_T50SKE, or S2_20190101 for a date only.
        let name = folder.file_name().unwrap().to_str().unwrap();
        let parts: Vec<&str> = name.split('_').collect();
        let (sensing, tile) = match parts.len() {
            4 => (parts[2].to_string(), parts[3]),
            _ => (format!("{}T105031", parts[parts.len() - 1]), "T31UES"),
        };
        let baseline = if old(k) { "N0206" } else { "N0511" };
        let product = format!(
            "S2B_MSIL2A_{sensing}_{baseline}_R075_{tile}_{}T062334",
            &sensing[..8]
        );
        let safe = to.join(format!("{product}.SAFE"));
        let img = safe.join(format!("GRANULE/L2A_{tile}_A000{k:03}_{sensing}/IMG_DATA"));
        let metadata = if old(k) {
            "<n1:Level-2A_User_Product xmlns:n1=\"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd\"><n1:General_Info><Product_Info><PROCESSING_BASELINE>02.06</PROCESSING_BASELINE></Product_Info></n1:General_Info></n1:Level-2A_User_Product>".to_string()
        } else {
            let offsets: String = (0..13)
                .map(|b| format!("<BOA_ADD_OFFSET band_id=\"{b}\">-1000</BOA_ADD_OFFSET>"))
                .collect();
            format!("<n1:Level-2A_User_Product xmlns:n1=\"https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd\"><n1:General_Info><Product_Info><PROCESSING_BASELINE>05.11</PROCESSING_BASELINE></Product_Info><Product_Image_Characteristics><BOA_ADD_OFFSET_VALUES_LIST>{offsets}</BOA_ADD_OFFSET_VALUES_LIST></Product_Image_Characteristics></n1:General_Info></n1:Level-2A_User_Product>")
        };
        fs::create_dir_all(&safe).unwrap();
        fs::write(safe.join("MTD_MSIL2A.xml"), metadata).unwrap();
        // The DNs the product stores: reflectance x 10,000, +1000 from baseline 04.00.
        let shift = source_offset + if old(k) { 0 } else { 1000 };
        let mut bands: Vec<_> = fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        bands.sort();
        for band_file in bands {
            // T50SKE_20250107_B02_10m.tif, or B02_20190101.tif
            let stem = band_file.file_stem().unwrap().to_str().unwrap().to_string();
            let band = stem
                .split('_')
                .find(|t| profile.bands.contains(t) || *t == "SCL")
                .unwrap()
                .to_string();
            let res = match band.as_str() {
                "B02" | "B03" | "B04" | "B08" => "10m",
                _ => "20m",
            };
            let src = gdal::Dataset::open(&band_file).unwrap();
            let (w, h, mut values) = crate::common::band_u16(&band_file);
            if band != "SCL" {
                for v in values.iter_mut().filter(|v| **v > 0) {
                    *v = (i32::from(*v) + shift).clamp(1, 65535) as u16;
                }
            }
            let copy = |dir: &str, values: Vec<u16>| {
                let mut m = mem.create_with_band_type::<u16, _>("", w, h, 1).unwrap();
                m.set_geo_transform(&src.geo_transform().unwrap()).unwrap();
                m.set_projection(&src.projection()).unwrap();
                let mut buf = gdal::raster::Buffer::new((w, h), values);
                m.rasterband(1)
                    .unwrap()
                    .write((0, 0), (w, h), &mut buf)
                    .unwrap();
                let out = img.join(dir);
                fs::create_dir_all(&out).unwrap();
                let file = out.join(format!("{tile}_{sensing}_{band}_{res}.jp2"));
                let options = gdal::raster::RasterCreationOptions::from_iter([
                    "REVERSIBLE=YES",
                    "QUALITY=100",
                ]);
                m.create_copy(&jp2, &file, &options).unwrap();
            };
            if band == "B02" {
                copy("R60m", vec![9999; w * h]);
            }
            copy(&format!("R{res}"), values);
        }
        if zipped(k) {
            zip_folder(&safe, &to.join(format!("{product}.zip")));
            fs::remove_dir_all(&safe).unwrap();
        }
    }
    folders.len()
}

/// Zips `folder` as the hubs do: entries under the folder's own name.
fn zip_folder(folder: &Path, zip_path: &Path) {
    let mut zip = zip::ZipWriter::new(fs::File::create(zip_path).unwrap());
    let root = folder.parent().unwrap();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let name = p.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            zip.start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
            std::io::Write::write_all(&mut zip, &fs::read(&p).unwrap()).unwrap();
        }
    }
    zip.finish().unwrap();
}

/// A technician points the job at the products as downloaded (SAFE folders and zips, of old
/// and new processing baselines) and gets the same results as from per-band GeoTIFFs: each
/// band at its finest resolution, each product with the DN offset its metadata states.
#[test]
fn sentinel2_products_are_read_as_delivered() {
    use gengbao::job::config::JobConfig;
    use gengbao::job::run::{run_period, RunOptions};
    let tmp = tempfile::tempdir().unwrap();
    let city = crate::common::city(&tmp.path().join("city"), 128, 3, 64);
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let safe_dir = tmp.path().join("safe");
    let products = as_safe_products(
        &city.dir.join("imagery"),
        &safe_dir,
        -1000,
        |k| k % 2 == 0,
        |k| k == 1,
    );
    assert!(products >= 4);
    let text = crate::common::config_text(&city)
        .replace(
            "folder = \"imagery\"",
            &format!("folder = {:?}", safe_dir.display().to_string()),
        )
        .replace("output = \"out\"", "output = \"out-safe\"");
    assert!(text.contains("out-safe"), "the example config changed");
    let safe_config = city.dir.join("job-safe.toml");
    fs::write(&safe_config, text).unwrap();
    let safe_cfg = JobConfig::load(&safe_config).unwrap();

    // A download cut short beside them is left out, listed and warned, not fatal.
    let cut = "S2B_MSIL2A_20250109T030549_N0511_R075_T50SKE_20250109T062334.zip";
    fs::write(safe_dir.join(cut), b"PK\x03\x04 interrupted").unwrap();
    let catalog = Catalog::scan(
        &safe_dir,
        SensorProfile::by_name("sentinel2-l2a").unwrap(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(catalog.acquisitions.len(), products);
    assert!(catalog.unplaced.is_empty(), "{:?}", catalog.unplaced);
    assert_eq!(catalog.damaged.len(), 1, "{:?}", catalog.damaged);
    assert_eq!(catalog.damaged[0].0, Path::new(cut));
    assert_eq!(catalog.acquisitions[1].offset, Some(0.0), "baseline 02.06");
    assert_eq!(
        catalog.acquisitions[0].offset,
        Some(-1000.0),
        "metadata's BOA_ADD_OFFSET"
    );

    for p in &city.periods {
        let from_tifs = run_period(&cfg, *p, &RunOptions::quiet()).unwrap();
        let from_products = run_period(&safe_cfg, *p, &RunOptions::quiet()).unwrap();
        assert_eq!(
            from_tifs.acquisitions.len(),
            from_products.acquisitions.len()
        );
        assert!(from_products.inputs.imagery_damaged[0].starts_with(cut));
        assert!(from_products.human().contains("products were left out"));
        for file in ["class.tif", "flags.tif", "composite.tif"] {
            let a = fs::read(cfg.layout().period(*p).dir().join(file)).unwrap();
            let b = fs::read(safe_cfg.layout().period(*p).dir().join(file)).unwrap();
            assert!(a == b, "{p} {file} differs between band files and products");
        }
    }
}

/// Products that cannot be read are named with what to do: a Level-1C product in a Level-2A
/// job, a zip cut short by an interrupted download.
#[test]
fn unreadable_products_are_named_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let l2a = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let l1c = tmp
        .path()
        .join("l1c/S2A_MSIL1C_20180505T103021_N0206_R108_T31UFS_20180505T133040.SAFE");
    fs::create_dir_all(l1c.join("GRANULE/L1C_T31UFS_A015000_20180505T103021/IMG_DATA")).unwrap();
    let e = Catalog::scan(&tmp.path().join("l1c"), l2a, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("Level-1C") && e.contains("sentinel2-l1c"), "{e}");
    // Unzipped under another name, a product is still known by its metadata file.
    let renamed = tmp.path().join("renamed/download");
    fs::create_dir_all(renamed.join("GRANULE/L1C_T31UFS_A015000_20180505T103021/IMG_DATA"))
        .unwrap();
    fs::write(renamed.join("MTD_MSIL1C.xml"), "<x/>").unwrap();
    let e = Catalog::scan(&tmp.path().join("renamed"), l2a, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("Level-1C") && e.contains("sentinel2-l1c"), "{e}");

    let cut = tmp.path().join("cut");
    fs::create_dir_all(&cut).unwrap();
    let zip = cut.join("S2B_MSIL2A_20250107T030549_N0511_R075_T50SKE_20250107T062334.zip");
    fs::write(&zip, b"PK\x03\x04 interrupted").unwrap();
    let e = Catalog::scan(&cut, l2a, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not a readable zip") && e.contains("download the damaged products again"),
        "{e}"
    );
    assert!(e.contains("S2B_MSIL2A_20250107T030549"), "{e}");
}

/// A Collection 2 Level-2 MTL file in USGS's text form, with the acquisition date and a
/// surface reflectance scale per DN of `scale` (offset -0.2) for bands 1 to 7, beside the
/// Level-1 group's top-of-atmosphere numbers under the same names.
fn mtl_text(spacecraft: &str, date: &str, scale: &str) -> String {
    let mut t = String::from("GROUP = LANDSAT_METADATA_FILE\n  GROUP = IMAGE_ATTRIBUTES\n");
    t += &format!("    SPACECRAFT_ID = \"{spacecraft}\"\n    DATE_ACQUIRED = {date}\n");
    t += "  END_GROUP = IMAGE_ATTRIBUTES\n  GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\n";
    for b in 1..=7 {
        t += &format!(
            "    REFLECTANCE_MULT_BAND_{b} = {scale}\n    REFLECTANCE_ADD_BAND_{b} = -0.200000\n"
        );
    }
    t += "  END_GROUP = LEVEL2_SURFACE_REFLECTANCE_PARAMETERS\n  GROUP = LEVEL1_RADIOMETRIC_RESCALING\n";
    for b in 1..=7 {
        t += &format!("    REFLECTANCE_MULT_BAND_{b} = 2.0000E-05\n    REFLECTANCE_ADD_BAND_{b} = -0.100000\n");
    }
    t + "  END_GROUP = LEVEL1_RADIOMETRIC_RESCALING\nEND_GROUP = LANDSAT_METADATA_FILE\nEND\n"
}

/// A Landsat Collection 2 Level-2 scene's tar as USGS delivers it: the band files and the MTL
/// file (stating `scale`, Collection 2's "2.75E-05" unless the test says otherwise) at its
/// root.
fn landsat_tar(dir: &Path, scene: &str, bands: &[&str], scale: &str) -> std::path::PathBuf {
    let files = dir.join(format!("{scene}_files"));
    fs::create_dir_all(&files).unwrap();
    let mut names = Vec::new();
    for band in bands {
        let name = format!("{scene}_{band}.TIF");
        tiny_tif(&files.join(&name));
        names.push(name);
    }
    let date = scene.split('_').nth(3).unwrap();
    let date = format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..]);
    fs::write(
        files.join(format!("{scene}_MTL.txt")),
        mtl_text(&format!("LANDSAT_{}", &scene[3..4]), &date, scale),
    )
    .unwrap();
    names.push(format!("{scene}_MTL.txt"));
    let tar = dir.join(format!("{scene}.tar"));
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&files)
        .args(&names)
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_dir_all(&files).unwrap();
    tar
}

/// Landsat scenes are read as downloaded, in their tars: Landsat 8/9 with the OLI profile's
/// band numbers, TM and ETM+ with theirs; a scene of the other sensor is refused with the
/// profile to set, and a cut tar is left out and named.
#[test]
fn landsat_scenes_are_read_in_their_tars() {
    let tmp = tempfile::tempdir().unwrap();
    let oli = SensorProfile::by_name("landsat-oli-sr").unwrap();
    let tm = SensorProfile::by_name("landsat-tm-sr").unwrap();
    let folder = tmp.path().join("oli");
    fs::create_dir_all(&folder).unwrap();
    let scene = "LC09_L2SP_119038_20250115_20250125_02_T1";
    let bands = [
        "SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7", "QA_PIXEL",
    ];
    landsat_tar(&folder, scene, &bands, "2.75E-05");

    let cat = Catalog::scan(&folder, oli, &Default::default()).unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    let a = &cat.acquisitions[0];
    assert_eq!(
        a.date.to_string(),
        "2025-01-15",
        "the acquisition date, not the processing date"
    );
    assert_eq!(a.files.len(), 8);
    // The MTL file's Level-2 offset (-0.2 / 0.0000275 per DN), not the Level-1 group's.
    assert_eq!(a.offset, Some(oli.add_offset));
    for (band, path) in &a.files {
        assert!(
            path.to_str().unwrap().starts_with("/vsitar/"),
            "{band}: {}",
            path.display()
        );
        assert!(path.to_str().unwrap().ends_with(&format!("_{band}.TIF")));
        let ds = gdal::Dataset::open(path).unwrap();
        assert_eq!(ds.raster_size(), (4, 4));
    }

    let e = Catalog::scan(&folder, tm, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("LC09") && e.contains("landsat-oli-sr"), "{e}");

    // A tar cut short beside a good scene is left out and named; alone, it is refused.
    fs::write(
        folder.join("LC08_L2SP_119038_20250107_20250117_02_T1.tar"),
        b"interrupted",
    )
    .unwrap();
    let cat = Catalog::scan(&folder, oli, &Default::default()).unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    assert_eq!(cat.damaged.len(), 1, "{:?}", cat.damaged);
    fs::remove_file(folder.join(format!("{scene}.tar"))).unwrap();
    let e = Catalog::scan(&folder, oli, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("LC08_L2SP_119038_20250107") && e.contains("download"),
        "{e}"
    );

    // A scene without one of its bands is incomplete.
    let partial = tmp.path().join("partial");
    fs::create_dir_all(&partial).unwrap();
    landsat_tar(
        &partial,
        "LT05_L2SP_119038_20050713_20200902_02_T1",
        &["SR_B1", "SR_B2", "QA_PIXEL"],
        "2.75E-05",
    );
    let e = Catalog::scan(&partial, tm, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("has no SR_B3 file"), "{e}");

    // A scene scaled otherwise than Collection 2 Level-2 (a Collection 1 product's 0.0001
    // per DN) is left out with that reason, not read at the profile's scale.
    let scaled = tmp.path().join("scaled");
    fs::create_dir_all(&scaled).unwrap();
    landsat_tar(&scaled, scene, &bands, "2.75E-05");
    let other = "LC08_L2SP_119038_20250107_20250117_02_T1";
    landsat_tar(&scaled, other, &bands, "1.0E-04");
    let cat = Catalog::scan(&scaled, oli, &Default::default()).unwrap();
    assert_eq!(cat.acquisitions.len(), 1);
    assert_eq!(cat.damaged.len(), 1, "{:?}", cat.damaged);
    let (named, why) = &cat.damaged[0];
    assert!(
        named.to_str().unwrap().starts_with(other)
            && why.contains("_MTL.txt scales SR_B1 by 0.0001")
            && why.contains("not Collection 2 Level-2"),
        "{named:?}: {why}"
    );
}

/// The STAC item of one of the generated city's acquisition folders, as Earth Search
/// describes a Sentinel-2 L2A product: assets keyed by common name with `eo:bands` and
/// `raster:bands`, and a true-colour asset of three bands. `href` gives an asset's href from
/// the folder's name and the band file's name.
fn stac_item(folder: &Path, href: impl Fn(&str, &str) -> String) -> serde_json::Value {
    let common = [
        ("B02", "blue"),
        ("B03", "green"),
        ("B04", "red"),
        ("B05", "rededge1"),
        ("B06", "rededge2"),
        ("B07", "rededge3"),
        ("B08", "nir"),
        ("B8A", "nir08"),
        ("B11", "swir16"),
        ("B12", "swir22"),
        ("SCL", "scl"),
    ];
    let name = folder.file_name().unwrap().to_str().unwrap();
    let sensing = name.split('_').nth(2).unwrap(); // 20250107T030549
    let datetime = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &sensing[..4],
        &sensing[4..6],
        &sensing[6..8],
        &sensing[9..11],
        &sensing[11..13],
        &sensing[13..15]
    );
    let mut assets = serde_json::Map::new();
    for (band, key) in common {
        let file = fs::read_dir(folder)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .find(|f| f.contains(&format!("_{band}_")))
            .unwrap();
        let mut asset = serde_json::json!({
            "href": href(name, &file),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "eo:bands": [{"name": band, "common_name": key}],
            "roles": ["data"],
        });
        if band != "SCL" {
            asset["raster:bands"] = serde_json::json!([{"scale": 0.0001, "offset": -0.1}]);
        }
        assets.insert(key.to_string(), asset);
    }
    let b04 = assets["red"]["href"].clone();
    assets.insert(
        "visual".into(),
        serde_json::json!({"href": b04, "eo:bands": [
            {"name": "red", "common_name": "red"}, {"name": "green", "common_name": "green"},
            {"name": "blue", "common_name": "blue"}]}),
    );
    serde_json::json!({
        "type": "Feature", "stac_version": "1.0.0", "id": name,
        "geometry": null,
        "properties": {"datetime": datetime, "s2:processing_baseline": "05.11"},
        "links": [], "assets": assets,
    })
}

/// The generated city's acquisition folders, in name order.
fn acquisition_folders(city: &gengbao::samples::SampleCity) -> Vec<std::path::PathBuf> {
    let mut folders: Vec<_> = fs::read_dir(city.dir.join("imagery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    folders.sort();
    folders
}

/// Runs every period of `cfg` and of `other` (the same imagery from another source) and
/// asserts that both give the same classes, flags and composites.
fn same_periods(
    city: &gengbao::samples::SampleCity,
    cfg: &gengbao::job::config::JobConfig,
    other: &gengbao::job::config::JobConfig,
    source: &str,
) {
    use gengbao::job::run::{run_period, RunOptions};
    for p in &city.periods {
        run_period(cfg, *p, &RunOptions::quiet()).unwrap();
        let s = run_period(other, *p, &RunOptions::quiet()).unwrap();
        assert!(s.inputs.imagery.ends_with(".json"), "{}", s.inputs.imagery);
        for file in ["class.tif", "flags.tif", "composite.tif"] {
            let a = fs::read(cfg.layout().period(*p).dir().join(file)).unwrap();
            let b = fs::read(other.layout().period(*p).dir().join(file)).unwrap();
            assert!(
                a == b,
                "{p} {file} differs between band folders and {source}"
            );
        }
    }
}

/// A technician who searched a STAC API (Earth Search's Sentinel-2 L2A collection) and saved
/// the answer points `[imagery] stac` at it: the items' assets are found by their common
/// names, the offset comes from their `raster:bands`, and the results are those of the same
/// imagery in band folders. A true-colour asset of three bands is never taken for one of them,
/// and an item without one of its bands is left out and named.
#[test]
fn a_saved_stac_search_is_an_imagery_source() {
    use gengbao::job::config::JobConfig;
    let tmp = tempfile::tempdir().unwrap();
    let city = crate::common::city(&tmp.path().join("city"), 128, 3, 64);
    let cfg = JobConfig::load(&city.job_config).unwrap();
    let folders = acquisition_folders(&city);
    let mut items = Vec::new();
    for (k, folder) in folders.iter().enumerate() {
        let mut item = stac_item(folder, |name, file| format!("imagery/{name}/{file}"));
        if k == 0 {
            item["assets"].as_object_mut().unwrap().remove("swir16");
        }
        items.push(item);
    }
    let collection = serde_json::json!({"type": "FeatureCollection", "features": items});
    fs::write(city.dir.join("items.json"), collection.to_string()).unwrap();
    let text = crate::common::config_text(&city)
        .replace("folder = \"imagery\"", "stac = \"items.json\"")
        .replace("output = \"out\"", "output = \"out-stac\"");
    fs::write(city.dir.join("job-stac.toml"), &text).unwrap();
    let stac_cfg = JobConfig::load(&city.dir.join("job-stac.toml")).unwrap();

    let catalog = Catalog::from_stac(
        &city.dir.join("items.json"),
        SensorProfile::by_name("sentinel2-l2a").unwrap(),
    )
    .unwrap();
    assert_eq!(catalog.acquisitions.len(), folders.len() - 1);
    assert_eq!(catalog.damaged.len(), 1);
    assert!(
        catalog.damaged[0].1.contains("no asset for band B11"),
        "{:?}",
        catalog.damaged
    );
    assert!(catalog
        .acquisitions
        .iter()
        .all(|a| a.offset == Some(-1000.0)));
    assert!(catalog.acquisitions[0].files["B04"]
        .to_str()
        .unwrap()
        .ends_with("_B04_10m.tif"));

    // The folder job without the item the STAC answer lacks, beside the STAC job.
    fs::remove_dir_all(&folders[0]).unwrap();
    same_periods(&city, &cfg, &stac_cfg, "STAC");

    let both = text.replace(
        "\nstac = \"items.json\"",
        "\nstac = \"items.json\"\nfolder = \"imagery\"",
    );
    fs::write(city.dir.join("job-both.toml"), both).unwrap();
    let e = JobConfig::load(&city.dir.join("job-both.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("imagery.stac") && e.contains("one imagery source"),
        "{e}"
    );
}

/// A static STAC catalog published on a web server (a catalog, its collection, one JSON file
/// per item, the bands as Cloud-Optimized GeoTIFFs): `[imagery] stac` is the catalog's address,
/// the links and the assets' relative hrefs are followed from there over HTTP, the pixels are
/// read by byte ranges, and the results are those of the same imagery in band folders. An
/// item link that does not answer is left out and named; an address that does not answer is
/// refused with its address.
#[test]
fn a_stac_catalog_on_a_web_server_is_an_imagery_source() {
    use gengbao::job::config::JobConfig;
    let tmp = tempfile::tempdir().unwrap();
    let city = crate::common::city(&tmp.path().join("city"), 128, 3, 64);
    let cfg = JobConfig::load(&city.job_config).unwrap();
    // The web server's folder: the imagery as Cloud-Optimized GeoTIFFs, and the catalog.
    let web = tmp.path().join("web");
    let cog = gdal::DriverManager::get_driver_by_name("COG").unwrap();
    for folder in acquisition_folders(&city) {
        let served = web.join("imagery").join(folder.file_name().unwrap());
        fs::create_dir_all(&served).unwrap();
        for band in crate::common::entries(&folder) {
            let ds = gdal::Dataset::open(&band).unwrap();
            let options = gdal::raster::RasterCreationOptions::from_iter(["BLOCKSIZE=64"]);
            ds.create_copy(&cog, served.join(band.file_name().unwrap()), &options)
                .unwrap();
        }
    }
    let (base, answered) = crate::common::serve_files(&web);
    let collection_dir = web.join("stac/sentinel-2-l2a");
    fs::create_dir_all(collection_dir.join("items")).unwrap();
    let mut links = vec![serde_json::json!({"rel": "item", "href": "./items/lost.json"})];
    for (k, folder) in acquisition_folders(&city).iter().enumerate() {
        // Relative hrefs from the item's own address, and one item's as absolute addresses.
        let item = stac_item(folder, |name, file| match k {
            0 => format!("{base}imagery/{name}/{file}"),
            _ => format!("../../../imagery/{name}/{file}"),
        });
        let id = item["id"].as_str().unwrap().to_string();
        fs::write(
            collection_dir.join(format!("items/{id}.json")),
            item.to_string(),
        )
        .unwrap();
        links.push(serde_json::json!({"rel": "item", "href": format!("./items/{id}.json")}));
    }
    let collection = serde_json::json!({
        "type": "Collection", "stac_version": "1.0.0", "id": "sentinel-2-l2a",
        "description": "the city's looks", "license": "proprietary",
        "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                   "temporal": {"interval": [[null, null]]}},
        "links": links,
    });
    fs::write(
        collection_dir.join("collection.json"),
        collection.to_string(),
    )
    .unwrap();
    let catalog = serde_json::json!({
        "type": "Catalog", "stac_version": "1.0.0", "id": "city",
        "description": "the city's imagery",
        "links": [{"rel": "child", "href": "./sentinel-2-l2a/collection.json"}],
    });
    fs::write(web.join("stac/catalog.json"), catalog.to_string()).unwrap();
    let address = format!("{base}stac/catalog.json");
    let text = crate::common::config_text(&city)
        .replace("folder = \"imagery\"", &format!("stac = \"{address}\""))
        .replace("output = \"out\"", "output = \"out-http\"");
    fs::write(city.dir.join("job-http.toml"), &text).unwrap();
    let http_cfg = JobConfig::load(&city.dir.join("job-http.toml")).unwrap();

    let profile = SensorProfile::by_name("sentinel2-l2a").unwrap();
    let catalog = Catalog::from_stac(Path::new(&address), profile).unwrap();
    assert_eq!(catalog.acquisitions.len(), acquisition_folders(&city).len());
    assert_eq!(catalog.damaged.len(), 1, "{:?}", catalog.damaged);
    let (lost, why) = &catalog.damaged[0];
    assert!(
        lost.to_str()
            .unwrap()
            .ends_with("sentinel-2-l2a/items/lost.json")
            && why.contains("cannot be read"),
        "{lost:?}: {why}"
    );
    assert!(catalog
        .acquisitions
        .iter()
        .flat_map(|a| a.files.values())
        .all(|f| f.starts_with(format!("/vsicurl/{base}imagery/"))));

    same_periods(&city, &cfg, &http_cfg, "the catalog on a web server");
    let summary = fs::read_to_string(
        http_cfg
            .layout()
            .period(city.periods[0])
            .dir()
            .join("summary.json"),
    )
    .unwrap();
    assert!(summary.contains(&address), "{summary}");
    assert!(answered.load(std::sync::atomic::Ordering::SeqCst) > 10);

    let nowhere = text
        .replace("stac/catalog.json", "stac/moved.json")
        .replace("out-http", "out-moved");
    fs::write(city.dir.join("job-moved.toml"), nowhere).unwrap();
    let moved_cfg = JobConfig::load(&city.dir.join("job-moved.toml")).unwrap();
    let e = gengbao::job::run::run_period(
        &moved_cfg,
        city.periods[0],
        &gengbao::job::run::RunOptions::quiet(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&format!("{base}stac/moved.json")) && e.contains("cannot be read"),
        "{e}"
    );
    assert!(!moved_cfg.layout().period(city.periods[0]).dir().exists());
}

/// The generated city's acquisitions as GF-2 PMS1 L1A products as delivered: blue, green, red
/// and NIR as raw DNs in one TIFF (`GF2_PMS1_…_L1A…-MSS1.tiff`) with the product `.xml`
/// (camera, date, sun) that calibrates them, every other product packed as its `.tar.gz`;
/// and the same reflectance as a plain folder of band files per acquisition (`B1`…`B4`,
/// reflectance × 10,000). Returns the number of acquisitions.
fn as_gaofen_products(from: &Path, products: &Path, plain: &Path, by_rpcs: bool) -> usize {
    use gengbao::geo::gaofen::{CalibrationTable, ProductMetadata};
    let gtiff = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let folders = crate::common::entries(from);
    fs::create_dir_all(products).unwrap();
    for (k, folder) in folders.iter().enumerate() {
        // S2B_MSIL2A_20250107T030549_T50SKE: the samples' DN is reflectance × 10,000 + 1000.
        let name = folder.file_name().unwrap().to_str().unwrap();
        let day = &name.split('_').nth(2).unwrap()[..8];
        let date = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..]);
        let band_file = |band: &str| {
            fs::read_dir(folder)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().contains(&format!("_{band}_")))
                .unwrap()
        };
        let product = format!("GF2_PMS1_E118.8_N32.0_{day}_L1A00000{k:04}");
        let staging = products.join(format!("{product}.staging"));
        let dir = if k % 2 == 0 {
            staging.clone()
        } else {
            products.to_path_buf()
        };
        fs::create_dir_all(&dir).unwrap();
        let xml = dir.join(format!("{product}-MSS1.xml"));
        fs::write(
            &xml,
            format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ProductMetaData>\n<SatelliteID>GF2</SatelliteID>\n<SensorID>PMS1</SensorID>\n<ProductLevel>LEVEL1A</ProductLevel>\n<CenterTime>{date} 03:05:49</CenterTime>\n<SolarZenith>{}</SolarZenith>\n</ProductMetaData>\n", 30.0 + k as f64),
        )
        .unwrap();
        let calibration = CalibrationTable::builtin()
            .calibration(&ProductMetadata::read(&xml).unwrap(), 4, &xml)
            .unwrap();
        let acquisition = plain.join(format!("GF2_{day}"));
        fs::create_dir_all(&acquisition).unwrap();
        let mut image: Option<gdal::Dataset> = None;
        for (b, band) in ["B02", "B03", "B04", "B08"].iter().enumerate() {
            let src = gdal::Dataset::open(band_file(band)).unwrap();
            let (w, h, dn) = crate::common::band_u16(&band_file(band));
            let reflectance = |v: u16| (f64::from(v) - 1000.0) / 10_000.0;
            let write = |path: &Path, bands: usize| {
                let mut ds = gtiff
                    .create_with_band_type::<u16, _>(path, w, h, bands)
                    .unwrap();
                ds.set_geo_transform(&src.geo_transform().unwrap()).unwrap();
                ds.set_projection(&src.projection()).unwrap();
                ds
            };
            let (per_dn, offset) = (calibration.reflectance_per_dn[b], calibration.dn_offset[b]);
            let raw: Vec<u16> = dn
                .iter()
                .map(|&v| {
                    if v == 0 {
                        0
                    } else {
                        (reflectance(v).max(1e-4) / per_dn - offset)
                            .round()
                            .max(1.0) as u16
                    }
                })
                .collect();
            // The plain folder holds what the DNs calibrate to, so that both deliveries are
            // one image.
            let values = raw
                .iter()
                .map(|&d| {
                    if d == 0 {
                        0
                    } else {
                        ((f64::from(d) + offset) * per_dn * 1e4).round().max(1.0) as u16
                    }
                })
                .collect();
            let plain_band = write(&acquisition.join(format!("GF2_{day}_B{}.tif", b + 1)), 1);
            plain_band
                .rasterband(1)
                .unwrap()
                .write(
                    (0, 0),
                    (w, h),
                    &mut gdal::raster::Buffer::new((w, h), values),
                )
                .unwrap();
            let image = image.get_or_insert_with(|| {
                let path = dir.join(format!("{product}-MSS1.tiff"));
                if by_rpcs {
                    l1a_image(&path, &src, w, h)
                } else {
                    write(&path, 4)
                }
            });
            image
                .rasterband(b + 1)
                .unwrap()
                .write((0, 0), (w, h), &mut gdal::raster::Buffer::new((w, h), raw))
                .unwrap();
        }
        drop(image);
        if k % 2 == 0 {
            crate::common::pack(&staging, None, &products.join(format!("{product}.tar.gz")));
            fs::remove_dir_all(&staging).unwrap();
        }
    }
    folders.len()
}

/// The classes and flags of a period of two jobs differ on under 1 % of the pixels, and
/// their patches are as many of each type, over areas within 1 %.
fn same_results(
    p: gengbao::domain::period::Period,
    (job, summary): (
        &gengbao::job::config::JobConfig,
        &gengbao::job::summary::RunSummary,
    ),
    (other, expected): (
        &gengbao::job::config::JobConfig,
        &gengbao::job::summary::RunSummary,
    ),
) {
    let read = |cfg: &gengbao::job::config::JobConfig, file: &str| {
        gengbao::geo::raster::read_band_f64(&cfg.layout().period(p).dir().join(file), 1)
            .unwrap()
            .2
    };
    for file in ["class.tif", "flags.tif"] {
        let (x, y) = (read(job, file), read(other, file));
        let differ = x.iter().zip(&y).filter(|(a, b)| a != b).count();
        println!("{p} {file}: {differ} of {} pixels differ", x.len());
        assert!(differ * 100 < x.len(), "{p} {file}: {differ} pixels differ");
    }
    for (kind, t) in &summary.totals {
        let u = &expected.totals[kind];
        assert_eq!(t.count, u.count, "{p} {kind}");
        assert!(
            (t.area_m2 - u.area_m2).abs() <= 0.01 * u.area_m2,
            "{p} {kind}"
        );
    }
}

/// A DEM at `dem` of heights 0 in degrees, over the western `share` of the ground of the L1A
/// images in `products` (from their RPCs' box), with a margin on the other sides.
fn sea_level_dem(products: &Path, dem: &Path, share: f64) -> std::path::PathBuf {
    use gdal::Metadata;
    let image = crate::common::entries(products)
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("-MSS1.tiff"))
        .unwrap();
    let ds = gdal::Dataset::open(&image).unwrap();
    let rpc = |key: &str| -> f64 { ds.metadata_item(key, "RPC").unwrap().parse().unwrap() };
    let (lon0, lat0) = (rpc("LONG_OFF"), rpc("LAT_OFF"));
    let (width, height) = (rpc("LONG_SCALE"), rpc("LAT_SCALE"));
    let (margin, step) = (0.01, 0.0005);
    let columns = ((margin + share * width) / step).ceil() as usize;
    let rows = ((height + 2.0 * margin) / step).ceil() as usize;
    let mut out = gdal::DriverManager::get_driver_by_name("GTiff")
        .unwrap()
        .create_with_band_type::<f32, _>(dem, columns, rows, 1)
        .unwrap();
    out.set_geo_transform(&[lon0 - margin, step, 0.0, lat0 + margin, 0.0, -step])
        .unwrap();
    out.set_spatial_ref(&gdal::spatial_ref::SpatialRef::from_epsg(4326).unwrap())
        .unwrap();
    let mut zeros = gdal::raster::Buffer::new((columns, rows), vec![0f32; columns * rows]);
    out.rasterband(1)
        .unwrap()
        .write((0, 0), (columns, rows), &mut zeros)
        .unwrap();
    dem.to_path_buf()
}

/// A four-band L1A image of `w` × `h` pixels placed by RPCs where `georeferenced` lies: an
/// affine model of longitude and latitude, fitted to three of its corners (the city is small
/// enough for UTM to be affine in degrees to well under a pixel). RPCs count pixels from the
/// first pixel's centre, a geotransform from its corner.
fn l1a_image(path: &Path, georeferenced: &gdal::Dataset, w: usize, h: usize) -> gdal::Dataset {
    use gdal::spatial_ref::{AxisMappingStrategy, CoordTransform, SpatialRef};
    use gdal::Metadata;
    let gt = georeferenced.geo_transform().unwrap();
    let mut utm = georeferenced.spatial_ref().unwrap();
    utm.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let mut wgs = SpatialRef::from_epsg(4326).unwrap();
    wgs.set_axis_mapping_strategy(AxisMappingStrategy::TraditionalGisOrder);
    let to_degrees = CoordTransform::new(&utm, &wgs).unwrap();
    let corner = |c: f64, r: f64| {
        let (mut x, mut y) = ([gt[0] + c * gt[1]], [gt[3] + r * gt[5]]);
        to_degrees
            .transform_coords(&mut x, &mut y, &mut [])
            .unwrap();
        (x[0], y[0])
    };
    let (lon0, lat0) = corner(0.0, 0.0);
    let (east, south) = (corner(w as f64, 0.0), corner(0.0, h as f64));
    // (lon, lat) = corner + m · (column, row); the RPCs give m's inverse.
    let m = [
        [(east.0 - lon0) / w as f64, (south.0 - lon0) / h as f64],
        [(east.1 - lat0) / w as f64, (south.1 - lat0) / h as f64],
    ];
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let inverse = [
        [m[1][1] / det, -m[0][1] / det],
        [-m[1][0] / det, m[0][0] / det],
    ];
    let (lon_scale, lat_scale) = ((east.0 - lon0).abs(), (south.1 - lat0).abs());
    let coeffs = |row: [f64; 2]| {
        let mut c = [0.0; 20];
        c[1] = row[0] * lon_scale;
        c[2] = row[1] * lat_scale;
        c.map(|v| v.to_string()).join(" ")
    };
    let one = {
        let mut c = [0.0; 20];
        c[0] = 1.0;
        c.map(|v| v.to_string()).join(" ")
    };
    let mut ds = gdal::DriverManager::get_driver_by_name("GTiff")
        .unwrap()
        .create_with_band_type::<u16, _>(path, w, h, 4)
        .unwrap();
    for (key, value) in [
        ("LINE_OFF", "-0.5".to_string()),
        ("SAMP_OFF", "-0.5".into()),
        ("LINE_SCALE", "1".into()),
        ("SAMP_SCALE", "1".into()),
        ("LAT_OFF", lat0.to_string()),
        ("LONG_OFF", lon0.to_string()),
        ("LAT_SCALE", lat_scale.to_string()),
        ("LONG_SCALE", lon_scale.to_string()),
        ("HEIGHT_OFF", "0".into()),
        ("HEIGHT_SCALE", "500".into()),
        ("LINE_NUM_COEFF", coeffs(inverse[1])),
        ("LINE_DEN_COEFF", one.clone()),
        ("SAMP_NUM_COEFF", coeffs(inverse[0])),
        ("SAMP_DEN_COEFF", one),
    ] {
        ds.set_metadata_item(key, &value, "RPC").unwrap();
    }
    ds
}

/// A technician points a GF-2 job at the products as downloaded (tar.gz and extracted TIFFs
/// with their `.xml`): each is dated and calibrated from its `.xml` and gives the classes
/// and patches of the same reflectance in band files; a cut download is left out and
/// listed; a product placed by RPCs needs the job's elevation, and says which keys give it.
#[test]
fn gaofen_products_are_read_as_delivered_by_a_job() {
    use gengbao::geo::imagery::ProductReading;
    use gengbao::job::config::JobConfig;
    use gengbao::job::run::{run_period, RunOptions};
    let tmp = tempfile::tempdir().unwrap();
    let city = crate::common::city(&tmp.path().join("city"), 128, 6, 64);
    let (products, plain) = (tmp.path().join("gf"), tmp.path().join("gf-plain"));
    let count = as_gaofen_products(&city.dir.join("imagery"), &products, &plain, false);
    let gf2 = SensorProfile::by_name("gf2-pms").unwrap();
    let cut = "GF2_PMS1_E118.8_N32.0_20250109_L1A0000009999.tar.gz";
    fs::write(products.join(cut), b"\x1f\x8b interrupted").unwrap();
    // An extracted product kept beside a tar of itself is one product; its panchromatic
    // TIFF is not read; a GF-1 product in a GF-2 job is another camera's.
    let extracted = fs::read_dir(&products)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with("-MSS1.tiff"))
        .unwrap();
    let product = extracted
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .replace("-MSS1.tiff", "");
    let again = tmp.path().join("again");
    fs::create_dir_all(&again).unwrap();
    for ext in ["tiff", "xml"] {
        fs::copy(
            extracted.with_extension(ext),
            again.join(format!("{product}-MSS1.{ext}")),
        )
        .unwrap();
    }
    let repacked = format!("{product}.tar.gz");
    crate::common::pack(&again, None, &products.join(&repacked));
    fs::copy(&extracted, products.join(format!("{product}-PAN1.tiff"))).unwrap();
    let gf1 = "GF1_WFV1_E118.8_N32.0_20250111_L1A0000004444-MSS1";
    fs::copy(&extracted, products.join(format!("{gf1}.tiff"))).unwrap();
    let xml = fs::read_to_string(extracted.with_extension("xml"))
        .unwrap()
        .replace("<SatelliteID>GF2", "<SatelliteID>GF1")
        .replace("<SensorID>PMS1", "<SensorID>WFV1");
    fs::write(products.join(format!("{gf1}.xml")), xml).unwrap();

    let catalog = Catalog::scan(&products, gf2, &ProductReading::default()).unwrap();
    assert_eq!(catalog.acquisitions.len(), count);
    assert!(catalog.unplaced.is_empty(), "{:?}", catalog.unplaced);
    let damaged: Vec<String> = catalog
        .damaged
        .iter()
        .map(|(p, why)| format!("{}: {why}", p.display()))
        .collect();
    assert_eq!(damaged.len(), 3, "{damaged:#?}");
    assert!(damaged.iter().any(|d| d.starts_with(cut)), "{damaged:#?}");
    assert!(
        damaged
            .iter()
            .any(|d| d.starts_with(&repacked) || d.contains(&repacked)),
        "the same product twice: {damaged:#?}"
    );
    assert!(
        damaged.iter().any(|d| d.starts_with(gf1)
            && d.contains("GF1-WFV1")
            && d.contains("[imagery] sensor")),
        "{damaged:#?}"
    );
    let by_folder = Catalog::scan(&plain, gf2, &ProductReading::default()).unwrap();
    let dates = |c: &Catalog| c.acquisitions.iter().map(|a| a.date).collect::<Vec<_>>();
    assert_eq!(
        dates(&catalog),
        dates(&by_folder),
        "dated by each product's .xml"
    );
    assert!(catalog.acquisitions.iter().all(|a| a.calibration.is_some()));

    let job = |folder: &Path, output: &str| {
        let text = crate::common::config_text(&city)
            .replace(
                "folder = \"imagery\"",
                &format!("folder = {:?}", folder.display().to_string()),
            )
            .replace("sensor = \"sentinel2-l2a\"", "sensor = \"gf2-pms\"")
            .replace("output = \"out\"", &format!("output = \"{output}\""));
        assert!(
            text.contains("gf2-pms") && text.contains(output),
            "the example config changed"
        );
        let path = city.dir.join(format!("job-{output}.toml"));
        fs::write(&path, text).unwrap();
        JobConfig::load(&path).unwrap()
    };
    let (from_products, from_bands) = (job(&products, "out-gf"), job(&plain, "out-gf-plain"));
    let (mut patches, mut band_runs) = (0, Vec::new());
    for p in &city.periods {
        let a = run_period(&from_products, *p, &RunOptions::quiet()).unwrap();
        let b = run_period(&from_bands, *p, &RunOptions::quiet()).unwrap();
        assert_eq!(a.acquisitions.len(), b.acquisitions.len(), "{p}");
        assert!(a.inputs.imagery_damaged.iter().any(|d| d.starts_with(cut)));
        // 2025 is not in the table: the latest year before it is used, and said.
        assert_eq!(
            a.inputs.imagery_calibration_notes.len(),
            a.acquisitions.len()
        );
        assert!(
            a.inputs.imagery_calibration_notes[0].contains("2020"),
            "{:?}",
            a.inputs
        );
        assert!(a.human().contains("another year's coefficients"));
        assert_eq!(a.inputs.imagery_calibrated.len(), a.acquisitions.len());
        assert!(
            a.inputs.imagery_calibrated[0].contains("GF2-PMS1 of 2025-")
                && a.inputs.imagery_calibrated[0].contains("2020 coefficients"),
            "{:?}",
            a.inputs.imagery_calibrated
        );
        same_results(*p, (&from_products, &a), (&from_bands, &b));
        patches += a.totals.values().map(|t| t.count).sum::<usize>();
        band_runs.push(b);
    }

    assert!(patches > 0, "the city's planted changes are reported");

    // The same products as L1A images placed by RPCs, on a DEM of flat ground at sea level:
    // each is orthorectified and warped onto the grid once per period, and gives the
    // classes and patches of the same reflectance in band files. A DEM that stops halfway
    // across the city is refused before anything is written, naming it.
    let l1a = tmp.path().join("gf-l1a");
    as_gaofen_products(
        &city.dir.join("imagery"),
        &l1a,
        &tmp.path().join("gf-l1a-plain"),
        true,
    );
    job(&l1a, "out-gf-l1a");
    let path = city.dir.join("job-out-gf-l1a.toml");
    let with_dem = |dem: &Path| {
        let text = fs::read_to_string(&path).unwrap().replace(
            "\n[grid]\n",
            &format!("\n[grid]\ndem = {:?}\n", dem.display().to_string()),
        );
        let path = city.dir.join(format!(
            "job-l1a-{}.toml",
            dem.file_stem().unwrap().to_string_lossy()
        ));
        fs::write(&path, text).unwrap();
        JobConfig::load(&path).unwrap()
    };
    let half = with_dem(&sea_level_dem(&l1a, &tmp.path().join("half.tif"), 0.5));
    let err = run_period(&half, city.periods[0], &RunOptions::quiet())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("half.tif") && err.contains("has no heights"),
        "{err}"
    );
    assert!(!half.layout().period(city.periods[0]).dir().exists());
    let from_l1a = with_dem(&sea_level_dem(&l1a, &tmp.path().join("dem.tif"), 1.0));
    for (p, b) in city.periods.iter().zip(&band_runs) {
        let a = run_period(&from_l1a, *p, &RunOptions::quiet()).unwrap();
        same_results(*p, (&from_l1a, &a), (&from_bands, b));
        // The products warped onto the grid were scratch: gone with the period's commit.
        assert!(!from_l1a.layout().period(*p).dir().join("work").exists());
    }

    // Without a quality band, a cumulus (300 m, white and bright) over the fields in every
    // look of a period is found by the visible-band test: unobserved, not classified. A
    // roof as white and bright, 80 m across, on the corner of four 64 px tiles, is seen:
    // each tile judges the roof's extent from beyond its own edges.
    let cloudy = tmp.path().join("gf-cloudy");
    crate::common::copy_dir(&plain, &cloudy);
    const CLOUD: std::ops::Range<usize> = 20..50;
    const ROOF: std::ops::Range<usize> = 61..69;
    for look in fs::read_dir(&cloudy).unwrap() {
        for band in fs::read_dir(look.unwrap().path()).unwrap() {
            let band = band.unwrap().path();
            let top: u16 = match band.to_string_lossy().chars().rev().nth(4) {
                Some('4') => 3800,
                _ => 3300,
            };
            let ds = crate::common::open_for_update(&band);
            let mut b = ds.rasterband(1).unwrap();
            for area in [CLOUD, ROOF] {
                let side = area.len();
                let mut buf = gdal::raster::Buffer::new((side, side), vec![top; side * side]);
                b.write(
                    (area.start as isize, area.start as isize),
                    (side, side),
                    &mut buf,
                )
                .unwrap();
            }
        }
    }
    let clouded = job(&cloudy, "out-gf-cloudy");
    let first = city.periods[0];
    run_period(&clouded, first, &RunOptions::quiet()).unwrap();
    let class = gengbao::geo::raster::read_band_f64(
        &clouded.layout().period(first).dir().join("class.tif"),
        1,
    )
    .unwrap()
    .2;
    let classified = CLOUD
        .flat_map(|r| CLOUD.map(move |c| r * 128 + c))
        .filter(|&i| class[i] > 0.0 && class[i] < 255.0)
        .count();
    assert_eq!(classified, 0, "pixels under the cloud were classified");
    let seen = ROOF
        .flat_map(|r| ROOF.map(move |c| r * 128 + c))
        .filter(|&i| class[i] > 0.0 && class[i] < 255.0)
        .count();
    assert_eq!(seen, ROOF.len() * ROOF.len(), "the roof is hidden as cloud");

    // An L1A image placed by RPCs lands on the map only on the ground's elevation.
    let rpc = tmp.path().join("rpc");
    fs::create_dir_all(&rpc).unwrap();
    let image = rpc.join("GF2_PMS1_E118.8_N32.0_20250301_L1A0000000777-MSS1.tiff");
    {
        use gdal::Metadata;
        let gtiff = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
        let mut ds = gtiff
            .create_with_band_type::<u16, _>(&image, 8, 8, 4)
            .unwrap();
        for b in 1..=4 {
            let mut dn = gdal::raster::Buffer::new((8, 8), vec![1000u16 * b as u16; 64]);
            ds.rasterband(b)
                .unwrap()
                .write((0, 0), (8, 8), &mut dn)
                .unwrap();
        }
        let unit = |k: usize| {
            let mut c = [0.0; 20];
            c[k] = 1.0;
            c.map(|v| v.to_string()).join(" ")
        };
        for (key, value) in [
            ("LINE_OFF", "4".to_string()),
            ("SAMP_OFF", "4".into()),
            ("LINE_SCALE", "4".into()),
            ("SAMP_SCALE", "4".into()),
            ("LAT_OFF", "32.0".into()),
            ("LONG_OFF", "118.8".into()),
            ("LAT_SCALE", "0.0003".into()),
            ("LONG_SCALE", "0.0003".into()),
            ("HEIGHT_OFF", "0".into()),
            ("HEIGHT_SCALE", "500".into()),
            ("LINE_NUM_COEFF", unit(2)),
            ("LINE_DEN_COEFF", unit(0)),
            ("SAMP_NUM_COEFF", unit(1)),
            ("SAMP_DEN_COEFF", unit(0)),
        ] {
            ds.set_metadata_item(key, &value, "RPC").unwrap();
        }
    }
    fs::copy(
        fs::read_dir(&products)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "xml"))
            .unwrap(),
        image.with_extension("xml"),
    )
    .unwrap();
    let e = Catalog::scan(&rpc, gf2, &ProductReading::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("placed by RPCs") && e.contains("[grid] dem") && e.contains("[imagery] height"),
        "{e}"
    );
    let on_height = ProductReading {
        elevation: gengbao::geo::rpc::Elevation::Height(20.0),
        ..Default::default()
    };
    let placed = Catalog::scan(&rpc, gf2, &on_height).unwrap();
    assert_eq!(placed.acquisitions.len(), 1);
    // Each band is read through the orthorectified product as long as the catalog lives.
    let (w, h, dn) = crate::common::band_u16(&placed.acquisitions[0].files["B4"]);
    assert!(w >= 6 && dn.contains(&4000), "{w}x{h} {dn:?}");
    assert!(dn.iter().all(|&v| v == 4000 || v == 0), "{dn:?}");
}
