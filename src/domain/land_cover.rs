//! Land-cover classes: the codes every classifier, raster and rule of gengbao shares.

/// Land-cover codes shared by every classifier and raster of gengbao.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[repr(u8)]
pub enum LandCover {
    NoData = 0,
    Grain = 1,
    NonGrain = 2,
    Built = 3,
    Water = 4,
    Grass = 5,
    Forest = 6,
}

impl LandCover {
    pub const ALL: [LandCover; 6] = [
        LandCover::Grain,
        LandCover::NonGrain,
        LandCover::Built,
        LandCover::Water,
        LandCover::Grass,
        LandCover::Forest,
    ];

    pub(crate) fn from_code(code: u8) -> LandCover {
        match code {
            1 => LandCover::Grain,
            2 => LandCover::NonGrain,
            3 => LandCover::Built,
            4 => LandCover::Water,
            5 => LandCover::Grass,
            6 => LandCover::Forest,
            _ => LandCover::NoData,
        }
    }

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn label_zh(self) -> &'static str {
        match self {
            LandCover::NoData => "无数据",
            LandCover::Grain => "粮食作物",
            LandCover::NonGrain => "非粮经济作物",
            LandCover::Built => "建设用地/硬化地表",
            LandCover::Water => "水体/坑塘",
            LandCover::Grass => "草地/灌丛",
            LandCover::Forest => "林地",
        }
    }
}
