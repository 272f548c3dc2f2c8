// candled's dashboard: the picked stream's candles, volume and indicators (Lightweight Charts), kept live from
// /api/v1/events; the stream picker and the task table, refreshed every few seconds. Plain JavaScript, no build.
//
// What it shows is also written into <body data-*> (candles drawn, the last candle's time and close, live updates
// applied, task rows) so that a headless browser can check it.
'use strict';

const LC = window.LightweightCharts;
const HISTORY = 1000; // candles and indicator points loaded when a stream is picked
const STREAMS_PAGE = 50;
const TASKS_PAGE = 100;
const REFRESH_MS = { tasks: 5000, streams: 5000, health: 5000, indicators: 2000 };
const COLORS = {
  up: '#26a69a', down: '#ef5350', upVolume: '#26a69a66', downVolume: '#ef535066',
  overlays: ['#f0b90b', '#2962ff', '#e040fb', '#00bcd4', '#ff9800', '#8bc34a'],
  bands: '#9598a1', rsi: '#b388ff', macd: '#2962ff', signal: '#ff9800',
};

const $ = (selector) => document.querySelector(selector);

const view = {
  streams: [], tasks: [], streamPage: 0, taskPage: 0,
  picked: null,      // { symbol, timeframe }
  generation: 0,     // bumped on every (re)load: answers for an older one are dropped
  loading: false,
  buffered: [],      // live candles received while the stream loads
  source: null,      // the EventSource
  reconnected: false,
  liveUpdates: 0,
  last: null,        // the last candle drawn, as /api/v1/candles gives it
  indicators: new Map(), // output name -> series
};

async function getJson(path) {
  const response = await fetch(path, { cache: 'no-store' });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function streamKey(stream) { return `${stream.symbol} ${stream.timeframe}`; }
function streamQuery(stream) {
  return `symbol=${encodeURIComponent(stream.symbol)}&timeframe=${encodeURIComponent(stream.timeframe)}`;
}
const seconds = (ms) => Math.floor(ms / 1000);

// ---- The chart ----

const chart = LC.createChart($('#chart'), {
  autoSize: true,
  layout: {
    background: { color: '#131722' }, textColor: '#d1d4dc', attributionLogo: true,
    panes: { separatorColor: '#2a2e39' },
  },
  grid: { vertLines: { color: '#1f2430' }, horzLines: { color: '#1f2430' } },
  timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 4 },
  crosshair: { mode: LC.CrosshairMode.Normal },
});
const candleSeries = chart.addSeries(LC.CandlestickSeries, {
  upColor: COLORS.up, downColor: COLORS.down, wickUpColor: COLORS.up, wickDownColor: COLORS.down, borderVisible: false,
});
const volumeSeries = chart.addSeries(LC.HistogramSeries, {
  priceScaleId: 'volume', priceFormat: { type: 'volume' }, lastValueVisible: false, priceLineVisible: false,
});
volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });

function bar(row) {
  return { time: seconds(row.timestamp), open: row.open, high: row.high, low: row.low, close: row.close };
}
function volumeBar(row) {
  return { time: seconds(row.timestamp), value: row.volume, color: row.close >= row.open ? COLORS.upVolume : COLORS.downVolume };
}

// Where an indicator output is drawn: over the candles, or in its own pane (RSI, MACD); null: not drawn.
function placement(name) {
  if (/^(sma|ema|wma|dema|tema)_\d+$/.test(name) || name === 'vwap') return { pane: 'price', kind: 'line' };
  if (/^(bb|keltner)_.*_(upper|middle|lower)$/.test(name)) return { pane: 'price', kind: 'band' };
  if (/^rsi_\d+$/.test(name)) return { pane: 'rsi', kind: 'rsi' };
  const macd = name.match(/^(macd_\d+_\d+_\d+)(_signal|_hist)?$/);
  if (macd) return { pane: macd[1], kind: macd[2] === '_hist' ? 'hist' : macd[2] === '_signal' ? 'signal' : 'macd' };
  return null;
}

// The order of the panes below the price: RSI, then each MACD.
const paneRank = (name) => ({ price: 0, rsi: 1 }[placement(name)?.pane] ?? 2);

// Creates the series of `names`, panes numbered in order of first use.
function createIndicatorSeries(names) {
  const panes = ['price'];
  let overlay = 0;
  const ordered = [...names].sort((a, b) => paneRank(a) - paneRank(b) || a.localeCompare(b));
  for (const name of ordered) {
    const place = placement(name);
    if (!place) continue;
    if (!panes.includes(place.pane)) panes.push(place.pane);
    const pane = panes.indexOf(place.pane);
    const common = { title: name, lastValueVisible: place.pane !== 'price', priceLineVisible: false, lineWidth: 1 };
    let series;
    if (place.kind === 'hist') {
      series = chart.addSeries(LC.HistogramSeries, { ...common, title: '' }, pane);
    } else {
      const color = { band: COLORS.bands, rsi: COLORS.rsi, macd: COLORS.macd, signal: COLORS.signal }[place.kind]
        || COLORS.overlays[overlay++ % COLORS.overlays.length];
      series = chart.addSeries(LC.LineSeries, { ...common, color, lineStyle: place.kind === 'band' ? 2 : 0 }, pane);
      if (place.kind === 'rsi') {
        for (const price of [30, 70]) series.createPriceLine({ price, color: '#787b86', lineStyle: 2, lineWidth: 1, axisLabelVisible: false });
      }
    }
    series.isHistogram = place.kind === 'hist';
    view.indicators.set(name, series);
  }
  chart.panes().forEach((pane, i) => pane.setStretchFactor(i === 0 ? 3 : 1));
}

function removeIndicatorSeries() {
  for (const series of view.indicators.values()) chart.removeSeries(series);
  view.indicators.clear();
}

function indicatorPoint(series, time, value) {
  if (!series.isHistogram) return { time, value };
  return { time, value, color: value >= 0 ? COLORS.upVolume : COLORS.downVolume };
}

// The points of an /api/v1/indicators answer per output name, provisional values last.
function pointsByName(answer) {
  const byName = new Map();
  const points = answer.provisional ? [...answer.series, answer.provisional] : answer.series;
  for (const point of points) {
    for (const [name, value] of Object.entries(point.values)) {
      if (!byName.has(name)) byName.set(name, []);
      byName.get(name).push([seconds(point.timestamp), value]);
    }
  }
  return byName;
}

// Replaces every indicator series with the answer's.
function setIndicators(answer) {
  removeIndicatorSeries();
  const byName = pointsByName(answer);
  createIndicatorSeries(byName.keys());
  for (const [name, points] of byName) {
    const series = view.indicators.get(name);
    if (series) series.setData(points.map(([time, value]) => indicatorPoint(series, time, value)));
  }
}

// Applies the newest points (closed and provisional) to the drawn series; false when an output is new.
function updateIndicators(answer) {
  for (const [name, points] of pointsByName(answer)) {
    const series = view.indicators.get(name);
    if (!series) {
      if (placement(name)) return false;
      continue;
    }
    const data = series.data();
    const lastTime = data.length ? data[data.length - 1].time : -Infinity;
    for (const [time, value] of points) {
      if (time >= lastTime) series.update(indicatorPoint(series, time, value));
    }
  }
  return true;
}

// ---- The picked stream: history, then live candles ----

function record() {
  const data = document.body.dataset;
  data.stream = view.picked ? streamKey(view.picked) : '';
  data.candles = String(candleSeries.data().length);
  data.lastTime = view.last ? String(view.last.timestamp) : '';
  data.lastClose = view.last ? String(view.last.close) : '';
  data.liveUpdates = String(view.liveUpdates);
  data.indicatorSeries = String(view.indicators.size);
  data.panes = String(chart.panes().length);
  const last = view.last;
  $('#legend').innerHTML = '';
  if (!last) return;
  const legend = `O <b>${last.open}</b> H <b>${last.high}</b> L <b>${last.low}</b> C <b>${last.close}</b> V <b>${last.volume}</b>`;
  $('#legend').innerHTML = `${legend} ${last.is_closed ? '' : '(in progress)'}`;
}

// Draws one candle: a newer one is appended, the last one updated; an older one (a late revision) is left to the
// next full load.
function applyCandle(row) {
  if (view.last && row.timestamp < view.last.timestamp) return;
  candleSeries.update(bar(row));
  volumeSeries.update(volumeBar(row));
  view.last = row;
  view.liveUpdates += 1;
  record();
}

function onCandle(event) {
  const row = JSON.parse(event.data);
  if (view.loading) view.buffered.push(row);
  else applyCandle(row);
}

function setLiveStatus(text, kind) {
  const badge = $('#live-status');
  badge.textContent = text;
  badge.className = `badge ${kind}`;
}

// Follows the picked stream's commits. Opened before the history is read, so that nothing committed meanwhile is
// missed: what arrives during the load is buffered and applied after it.
function follow(stream) {
  if (view.source) view.source.close();
  const source = new EventSource(`/api/v1/events?${streamQuery(stream)}`);
  view.source = source;
  view.reconnected = false;
  source.addEventListener('candle', onCandle);
  source.addEventListener('lagged', () => load());
  source.onopen = () => {
    setLiveStatus('live', 'ok');
    if (view.reconnected) load(); // candles committed while disconnected
  };
  source.onerror = () => {
    view.reconnected = true;
    setLiveStatus('reconnecting', 'warn');
  };
}

// Reads the picked stream's history and indicators and redraws them.
async function load() {
  const stream = view.picked;
  const generation = ++view.generation;
  view.loading = true;
  view.buffered = [];
  try {
    const query = streamQuery(stream);
    const [candles, indicators] = await Promise.all([
      getJson(`/api/v1/candles?${query}&limit=${HISTORY}`),
      getJson(`/api/v1/indicators?${query}&limit=${HISTORY}`),
    ]);
    if (generation !== view.generation) return;
    candleSeries.setData(candles.map(bar));
    volumeSeries.setData(candles.map(volumeBar));
    setIndicators(indicators);
    view.last = candles.length ? candles[candles.length - 1] : null;
    view.loading = false;
    for (const row of view.buffered) applyCandle(row);
    view.buffered = [];
    record();
  } catch (error) {
    if (generation === view.generation) {
      view.loading = false;
      setLiveStatus(`load failed: ${error.message}`, 'bad');
    }
  }
}

function pick(stream) {
  view.picked = { symbol: stream.symbol, timeframe: stream.timeframe };
  view.liveUpdates = 0;
  view.last = null;
  history.replaceState(null, '', `#${stream.symbol}/${stream.timeframe}`);
  $('#stream-title').textContent = streamKey(stream);
  follow(view.picked);
  load();
  record();
  renderStreams();
}

async function refreshIndicators() {
  if (!view.picked || view.loading) return;
  const generation = view.generation;
  const answer = await getJson(`/api/v1/indicators?${streamQuery(view.picked)}&limit=3`);
  if (generation === view.generation && !view.loading && !updateIndicators(answer)) load();
}

// ---- The stream picker and the task table: filtered and paged, so that thousands stay cheap ----

// Whether every word of the filter is in `text` (lower case).
function matches(filter, text) {
  return filter.toLowerCase().split(/\s+/).filter(Boolean).every((word) => text.includes(word));
}

function paged(items, page, size, pagerSelector) {
  const pages = Math.max(1, Math.ceil(items.length / size));
  const current = Math.min(page, pages - 1);
  $(`${pagerSelector} span`).textContent = `page ${current + 1} of ${pages}`;
  return { current, rows: items.slice(current * size, (current + 1) * size) };
}

function renderStreams() {
  const filter = $('#stream-filter').value;
  const shown = view.streams.filter((s) => matches(filter, `${streamKey(s)} ${s.stale ? 'stale' : ''} ${s.missing > 0 ? 'missing' : ''}`.toLowerCase()));
  const { current, rows } = paged(shown, view.streamPage, STREAMS_PAGE, '#streams-pager');
  view.streamPage = current;
  const body = document.createElement('tbody');
  for (const stream of rows) {
    const tr = document.createElement('tr');
    tr.dataset.stream = streamKey(stream);
    if (view.picked && streamKey(view.picked) === tr.dataset.stream) tr.className = 'picked';
    tr.append(
      cell(streamKey(stream)),
      cell(`${stream.present}/${stream.expected}`, 'num'),
      cell(String(stream.missing), stream.missing > 0 ? 'num missing' : 'num'),
      cell(stream.stale ? 'stale' : '', 'stale'),
    );
    tr.addEventListener('click', () => pick(stream));
    body.append(tr);
  }
  $('#streams tbody').replaceWith(body);
  $('#streams-count').textContent = `${shown.length} of ${view.streams.length}`;
  document.body.dataset.streamsTotal = String(view.streams.length);
  document.body.dataset.streamRows = String(rows.length);
}

function renderTasks() {
  const filter = $('#task-filter').value;
  const shown = view.tasks.filter((t) => matches(filter, `${t.name} ${t.kind} ${t.state}`.toLowerCase()));
  const { current, rows } = paged(shown, view.taskPage, TASKS_PAGE, '#tasks-pager');
  view.taskPage = current;
  const body = document.createElement('tbody');
  for (const task of rows) {
    const tr = document.createElement('tr');
    tr.dataset.name = task.name;
    tr.append(
      cell(task.name),
      cell(task.kind),
      cell(task.state, task.state),
      cell(String(task.restarts), 'num'),
      cell(`${task.mailbox_depth}/${task.mailbox_capacity}`, 'num'),
      cell(String(task.messages_handled), 'num'),
      cell(task.last_error || '', 'error'),
    );
    body.append(tr);
  }
  $('#tasks tbody').replaceWith(body);
  $('#tasks-count').textContent = `${shown.length} of ${view.tasks.length}`;
  document.body.dataset.taskRows = String(rows.length);
  document.body.dataset.tasksTotal = String(view.tasks.length);
}

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400, w: 604800, M: 2592000 };
const timeframeSeconds = (timeframe) => parseInt(timeframe, 10) * (UNIT_SECONDS[timeframe.slice(-1)] || 0);
// By symbol, then shortest timeframe first: a stable order across refreshes.
const byStream = (a, b) => a.symbol.localeCompare(b.symbol) || timeframeSeconds(a.timeframe) - timeframeSeconds(b.timeframe);

async function refreshStreams() {
  const answer = await getJson('/api/v1/streams');
  view.streams = answer.streams.sort(byStream);
  if (!view.picked && view.streams.length) {
    const [symbol, timeframe] = decodeURIComponent(location.hash.slice(1)).split('/');
    pick(view.streams.find((s) => s.symbol === symbol && s.timeframe === timeframe) || view.streams[0]);
  }
  renderStreams();
}

async function refreshTasks() {
  view.tasks = (await getJson('/api/v1/tasks/status')).tasks;
  renderTasks();
}

async function refreshHealth() {
  const response = await fetch('/health', { cache: 'no-store' });
  const health = await response.json();
  const badge = $('#health');
  badge.textContent = `health: ${health.status}`;
  badge.className = `badge ${{ healthy: 'ok', degraded: 'warn' }[health.status] || 'bad'}`;
}

// Runs `refresh` now and every `ms`, a failure shown and retried at the next tick.
function every(ms, refresh) {
  const run = () => refresh().catch((error) => console.warn(error));
  run();
  setInterval(run, ms);
}

function wirePager(selector, onStep) {
  $(selector).addEventListener('click', (event) => {
    const step = Number(event.target.dataset.step || 0);
    if (step) onStep(step);
  });
}

$('#stream-filter').addEventListener('input', () => { view.streamPage = 0; renderStreams(); });
$('#task-filter').addEventListener('input', () => { view.taskPage = 0; renderTasks(); });
wirePager('#streams-pager', (step) => { view.streamPage = Math.max(0, view.streamPage + step); renderStreams(); });
wirePager('#tasks-pager', (step) => { view.taskPage = Math.max(0, view.taskPage + step); renderTasks(); });
every(REFRESH_MS.streams, refreshStreams);
every(REFRESH_MS.tasks, refreshTasks);
every(REFRESH_MS.health, refreshHealth);
every(REFRESH_MS.indicators, refreshIndicators);
