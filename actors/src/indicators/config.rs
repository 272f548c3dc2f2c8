//! The `[indicators]` configuration section, its defaults, validation and output naming.

use serde::Deserialize;

/// TA-Lib's largest accepted period.
pub const MAX_PERIOD: u32 = 100_000;

/// The `[indicators]` section. A missing key takes its value from [`Default`] (the default set); write `ema = []`
/// to turn a default off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IndicatorConfig {
    /// SMA periods (TA-Lib `SMA`).
    pub sma: Vec<u32>,
    /// EMA periods (TA-Lib `EMA`).
    pub ema: Vec<u32>,
    /// RSI periods (TA-Lib `RSI`).
    pub rsi: Vec<u32>,
    /// `[fast, slow, signal]` (TA-Lib `MACD`).
    pub macd: Vec<[u32; 3]>,
    /// `[period, multiplier]` (TA-Lib `BBANDS`, SMA, equal up/down multipliers).
    pub bollinger: Vec<(u32, f64)>,
    /// ATR periods (TA-Lib `ATR`).
    pub atr: Vec<u32>,
    /// WMA periods (TA-Lib `WMA`).
    pub wma: Vec<u32>,
    /// DEMA periods (TA-Lib `DEMA`).
    pub dema: Vec<u32>,
    /// TEMA periods (TA-Lib `TEMA`).
    pub tema: Vec<u32>,
    /// `[fastk, slowk, slowd]` (TA-Lib `STOCH`, SMA slowing).
    pub stoch: Vec<[u32; 3]>,
    /// On-balance volume (TA-Lib `OBV` on close and volume).
    pub obv: bool,
    /// ADX periods (TA-Lib `ADX`).
    pub adx: Vec<u32>,
    /// `[period, multiplier]`: EMA(close, period) ± multiplier × ATR(period).
    pub keltner: Vec<(u32, f64)>,
    /// Session VWAP resetting at 00:00 UTC.
    pub vwap: bool,
}

impl Default for IndicatorConfig {
    fn default() -> Self {
        Self {
            sma: vec![20],
            ema: vec![12, 26],
            rsi: vec![14],
            macd: vec![[12, 26, 9]],
            bollinger: vec![(20, 2.0)],
            atr: vec![14],
            wma: Vec::new(),
            dema: Vec::new(),
            tema: Vec::new(),
            stoch: Vec::new(),
            obv: false,
            adx: Vec::new(),
            keltner: Vec::new(),
            vwap: false,
        }
    }
}

/// A rejected `[indicators]` entry: `indicators.<key>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("indicators.{key}: {problem}")]
pub struct IndicatorConfigError {
    pub key: &'static str,
    pub problem: String,
}

impl IndicatorConfigError {
    fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self { key, problem: problem.into() }
    }
}

/// `2.0` → `2`, `2.5` → `2.5`: the multiplier as it appears in output names.
pub fn format_multiplier(m: f64) -> String {
    format!("{m}")
}

/// Checks one period against TA-Lib's accepted range, naming `what` (e.g. "period", "fastk") in the problem.
pub(crate) fn check_period(key: &'static str, what: &str, p: u32, min: u32) -> Result<(), IndicatorConfigError> {
    if p < min {
        return Err(IndicatorConfigError::new(key, format!("{what} {p} must be at least {min}")));
    }
    if p > MAX_PERIOD {
        return Err(IndicatorConfigError::new(key, format!("{what} {p} must be at most {MAX_PERIOD}")));
    }
    Ok(())
}

pub(crate) fn check_multiplier(key: &'static str, m: f64) -> Result<(), IndicatorConfigError> {
    if m.is_finite() && m > 0.0 {
        Ok(())
    } else {
        Err(IndicatorConfigError::new(key, format!("multiplier {m} must be finite and > 0")))
    }
}

/// One configured indicator instance, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Spec {
    Sma(u32),
    Ema(u32),
    Wma(u32),
    Dema(u32),
    Tema(u32),
    Rsi(u32),
    Macd(u32, u32, u32),
    Bollinger(u32, f64),
    Atr(u32),
    Adx(u32),
    Stoch(u32, u32, u32),
    Keltner(u32, f64),
    Obv,
    Vwap,
}

impl Spec {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Spec::Sma(_) => "sma",
            Spec::Ema(_) => "ema",
            Spec::Wma(_) => "wma",
            Spec::Dema(_) => "dema",
            Spec::Tema(_) => "tema",
            Spec::Rsi(_) => "rsi",
            Spec::Macd(..) => "macd",
            Spec::Bollinger(..) => "bollinger",
            Spec::Atr(_) => "atr",
            Spec::Adx(_) => "adx",
            Spec::Stoch(..) => "stoch",
            Spec::Keltner(..) => "keltner",
            Spec::Obv => "obv",
            Spec::Vwap => "vwap",
        }
    }

    /// The output names, in emission order.
    pub(crate) fn output_names(self) -> Vec<String> {
        let bands = |prefix: &str, p: u32, m: f64| {
            let base = format!("{prefix}_{p}_{}", format_multiplier(m));
            vec![format!("{base}_upper"), format!("{base}_middle"), format!("{base}_lower")]
        };
        match self {
            Spec::Sma(p) | Spec::Ema(p) | Spec::Wma(p) | Spec::Dema(p) | Spec::Tema(p) | Spec::Rsi(p) => {
                vec![format!("{}_{p}", self.key())]
            }
            Spec::Atr(p) | Spec::Adx(p) => vec![format!("{}_{p}", self.key())],
            Spec::Macd(f, s, g) => {
                let base = format!("macd_{f}_{s}_{g}");
                vec![base.clone(), format!("{base}_signal"), format!("{base}_hist")]
            }
            Spec::Bollinger(p, m) => bands("bb", p, m),
            Spec::Keltner(p, m) => bands("keltner", p, m),
            Spec::Stoch(a, b, c) => vec![format!("stoch_{a}_{b}_{c}_k"), format!("stoch_{a}_{b}_{c}_d")],
            Spec::Obv => vec!["obv".to_owned()],
            Spec::Vwap => vec!["vwap".to_owned()],
        }
    }

    /// TA-Lib's parameter limits, plus our own: finite positive multipliers.
    pub(crate) fn check(self) -> Result<(), IndicatorConfigError> {
        let key = self.key();
        match self {
            // TA-Lib accepts period 1 for these (the output is then the input).
            Spec::Sma(p) | Spec::Ema(p) | Spec::Wma(p) | Spec::Dema(p) | Spec::Tema(p) | Spec::Atr(p) => {
                check_period(key, "period", p, 1)
            }
            Spec::Rsi(p) | Spec::Adx(p) => check_period(key, "period", p, 2),
            Spec::Macd(f, s, g) => {
                check_period(key, "fast period", f, 2)?;
                check_period(key, "slow period", s, 2)?;
                check_period(key, "signal period", g, 1)
            }
            Spec::Bollinger(p, m) => {
                check_period(key, "period", p, 2)?;
                check_multiplier(key, m)
            }
            Spec::Keltner(p, m) => {
                check_period(key, "period", p, 1)?;
                check_multiplier(key, m)
            }
            Spec::Stoch(a, b, c) => {
                check_period(key, "fastk period", a, 1)?;
                check_period(key, "slowk period", b, 1)?;
                check_period(key, "slowd period", c, 1)
            }
            Spec::Obv | Spec::Vwap => Ok(()),
        }
    }
}

impl IndicatorConfig {
    /// Every configured instance in output order (duplicates and invalid entries included).
    pub(crate) fn specs(&self) -> Vec<Spec> {
        let mut specs = Vec::new();
        specs.extend(self.sma.iter().map(|&p| Spec::Sma(p)));
        specs.extend(self.ema.iter().map(|&p| Spec::Ema(p)));
        specs.extend(self.wma.iter().map(|&p| Spec::Wma(p)));
        specs.extend(self.dema.iter().map(|&p| Spec::Dema(p)));
        specs.extend(self.tema.iter().map(|&p| Spec::Tema(p)));
        specs.extend(self.rsi.iter().map(|&p| Spec::Rsi(p)));
        specs.extend(self.macd.iter().map(|&[f, s, g]| Spec::Macd(f, s, g)));
        specs.extend(self.bollinger.iter().map(|&(p, m)| Spec::Bollinger(p, m)));
        specs.extend(self.atr.iter().map(|&p| Spec::Atr(p)));
        specs.extend(self.adx.iter().map(|&p| Spec::Adx(p)));
        specs.extend(self.stoch.iter().map(|&[a, b, c]| Spec::Stoch(a, b, c)));
        specs.extend(self.keltner.iter().map(|&(p, m)| Spec::Keltner(p, m)));
        if self.obv {
            specs.push(Spec::Obv);
        }
        if self.vwap {
            specs.push(Spec::Vwap);
        }
        specs
    }

    /// Checks every entry: TA-Lib's period limits, finite positive multipliers, no duplicate outputs, and at most
    /// `u16::MAX + 1` outputs in all. The first problem found is returned.
    pub fn validate(&self) -> Result<(), IndicatorConfigError> {
        let mut seen: Vec<String> = Vec::new();
        for spec in self.specs() {
            spec.check()?;
            let names = spec.output_names();
            if let Some(dup) = names.iter().find(|n| seen.contains(n)) {
                return Err(IndicatorConfigError::new(spec.key(), format!("duplicate entry (output `{dup}`)")));
            }
            seen.extend(names);
        }
        if seen.len() > usize::from(u16::MAX) + 1 {
            return Err(IndicatorConfigError::new("*", format!("{} outputs exceed the limit of 65536", seen.len())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_matches_the_documented_section() {
        let json = r#"{"sma":[20],"ema":[12,26],"rsi":[14],"macd":[[12,26,9]],"bollinger":[[20,2.0]],"atr":[14]}"#;
        let parsed: IndicatorConfig = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed, IndicatorConfig::default());
        assert_eq!(serde_json::from_str::<IndicatorConfig>("{}").expect("parses"), IndicatorConfig::default());
        assert!(IndicatorConfig::default().validate().is_ok());
    }

    #[test]
    fn integer_multiplier_and_extras_parse() {
        let json = r#"{"bollinger":[[20,2]],"stoch":[[5,3,3]],"obv":true,"keltner":[[20,1.5]],"vwap":true}"#;
        let parsed: IndicatorConfig = serde_json::from_str(json).expect("parses");
        assert_eq!(parsed.bollinger, vec![(20, 2.0)]);
        assert!(parsed.obv && parsed.vwap);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(serde_json::from_str::<IndicatorConfig>(r#"{"smaa":[20]}"#).is_err());
    }

    #[test]
    fn validation_messages() {
        let base = || IndicatorConfig { sma: vec![], ..IndicatorConfig::default() };
        let cases: Vec<(IndicatorConfig, &str)> = vec![
            (IndicatorConfig { rsi: vec![0], ..base() }, "indicators.rsi: period 0 must be at least 2"),
            (IndicatorConfig { sma: vec![0], ..base() }, "indicators.sma: period 0 must be at least 1"),
            (IndicatorConfig { adx: vec![1], ..base() }, "indicators.adx: period 1 must be at least 2"),
            (IndicatorConfig { ema: vec![200_000], ..base() }, "indicators.ema: period 200000 must be at most 100000"),
            (
                IndicatorConfig { bollinger: vec![(20, f64::NAN)], ..base() },
                "indicators.bollinger: multiplier NaN must be finite and > 0",
            ),
            (
                IndicatorConfig { keltner: vec![(20, -1.0)], ..base() },
                "indicators.keltner: multiplier -1 must be finite and > 0",
            ),
            (IndicatorConfig { macd: vec![[1, 26, 9]], ..base() }, "indicators.macd: fast period 1 must be at least 2"),
            (IndicatorConfig { ema: vec![12, 12], ..base() }, "indicators.ema: duplicate entry (output `ema_12`)"),
            (
                IndicatorConfig { bollinger: vec![(20, 2.0), (20, 2.0)], ..base() },
                "indicators.bollinger: duplicate entry (output `bb_20_2_upper`)",
            ),
            (
                IndicatorConfig { stoch: vec![[5, 0, 3]], ..base() },
                "indicators.stoch: slowk period 0 must be at least 1",
            ),
        ];
        for (config, want) in cases {
            assert_eq!(config.validate().map_err(|e| e.to_string()), Err(want.to_owned()));
        }
    }

    #[test]
    fn output_names() {
        let cases = [
            (Spec::Bollinger(20, 2.0), vec!["bb_20_2_upper", "bb_20_2_middle", "bb_20_2_lower"]),
            (Spec::Bollinger(20, 2.5), vec!["bb_20_2.5_upper", "bb_20_2.5_middle", "bb_20_2.5_lower"]),
            (Spec::Macd(12, 26, 9), vec!["macd_12_26_9", "macd_12_26_9_signal", "macd_12_26_9_hist"]),
            (Spec::Stoch(5, 3, 3), vec!["stoch_5_3_3_k", "stoch_5_3_3_d"]),
            (Spec::Keltner(20, 2.0), vec!["keltner_20_2_upper", "keltner_20_2_middle", "keltner_20_2_lower"]),
            (Spec::Adx(14), vec!["adx_14"]),
            (Spec::Obv, vec!["obv"]),
        ];
        for (spec, want) in cases {
            assert_eq!(spec.output_names(), want);
        }
    }
}
