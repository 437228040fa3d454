/* A participant's page: the ctDNA/imaging chart and the QoL charts, drawn with the vendored
 * Chart.js (static/vendor/chartjs) from the JSON block #participant-chart-data. The tables under
 * each chart hold the same data, so nothing is lost when scripts are off. No inline script: the
 * page's CSP is default-src 'self'. */
(function () {
  "use strict";

  var DAY = 86400000;
  var COLOURS = { positive: "#b3261e", negative: "#1f6b2a", other: "#6b7280", line: "#9aa3b2" };
  var RECIST_COLOURS = { PD: "#b3261e", SD: "#1f4f99", PR: "#1f6b2a", CR: "#1f6b2a", NE: "#6b7280" };
  var PALETTE = ["#1f5fbf", "#b3261e", "#1f6b2a", "#8a5a00", "#4b2a8a", "#0f7c8c", "#c2185b", "#5b6475"];

  function ms(isoDay) {
    var p = isoDay.split("-");
    return Date.UTC(+p[0], +p[1] - 1, +p[2]);
  }

  function day(value) {
    return new Date(value).toISOString().slice(0, 10);
  }

  function readData() {
    var el = document.getElementById("participant-chart-data");
    if (!el) return null;
    try {
      return JSON.parse(el.textContent);
    } catch (e) {
      return null;
    }
  }

  function dateAxis(xs) {
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    var pad = Math.max(7 * DAY, (hi - lo) * 0.04);
    return {
      type: "linear",
      min: lo - pad,
      max: hi + pad,
      ticks: { maxTicksLimit: 8, callback: function (v) { return day(v); } },
      grid: { color: "#eef0f4" }
    };
  }

  function callStyle(call) {
    if (call === "positive") return { style: "triangle", colour: COLOURS.positive, radius: 8 };
    if (call === "negative") return { style: "circle", colour: COLOURS.negative, radius: 5 };
    return { style: "rectRot", colour: COLOURS.other, radius: 6 };
  }

  /* Vertical marks with a label at the top of the plot: imaging responses and the anchor date. */
  var markers = {
    id: "stepdownMarkers",
    afterDatasetsDraw: function (chart, args, options) {
      var marks = options.marks || [];
      if (!marks.length) return;
      var ctx = chart.ctx, area = chart.chartArea, x = chart.scales.x;
      ctx.save();
      ctx.font = "600 12px system-ui, sans-serif";
      ctx.textBaseline = "top";
      marks.forEach(function (m, i) {
        var px = x.getPixelForValue(m.x);
        if (px < area.left || px > area.right) return;
        ctx.strokeStyle = m.colour;
        ctx.fillStyle = m.colour;
        ctx.lineWidth = m.width || 1.5;
        ctx.setLineDash(m.dash || [5, 4]);
        ctx.beginPath();
        ctx.moveTo(px, area.top);
        ctx.lineTo(px, area.bottom);
        ctx.stroke();
        var w = ctx.measureText(m.label).width;
        var tx = px + 4 + w > area.right ? px - 4 - w : px + 4;
        ctx.fillText(m.label, tx, area.top + 2 + (i % 2) * 14);
      });
      ctx.restore();
    }
  };

  function ctdnaChart(Chart, results) {
    var canvas = document.getElementById("ctdna-chart");
    if (!canvas) return;
    var points = results.ctdna.map(function (r) {
      return { x: ms(r.date), y: r.mtm_per_ml == null ? 0 : r.mtm_per_ml, call: r.call, mtm: r.mtm_per_ml };
    });
    var marks = results.imaging.map(function (r) {
      return {
        x: ms(r.date),
        label: r.modality + ": " + (r.recist || "?"),
        colour: RECIST_COLOURS[r.recist] || COLOURS.other,
        width: r.recist === "PD" ? 2.5 : 1.5
      };
    });
    if (results.anchor_date) {
      marks.unshift({ x: ms(results.anchor_date), label: "anchor", colour: "#9aa3b2", dash: [2, 3], width: 1 });
    }
    var xs = points.map(function (p) { return p.x; }).concat(marks.map(function (m) { return m.x; }));
    if (!xs.length) return;
    new Chart(canvas, {
      type: "line",
      data: {
        datasets: [{
          label: "ctDNA MTM/mL",
          data: points,
          parsing: false,
          borderColor: COLOURS.line,
          borderWidth: 1.5,
          pointStyle: function (c) { return c.raw ? callStyle(c.raw.call).style : "circle"; },
          pointRadius: function (c) { return c.raw ? callStyle(c.raw.call).radius : 4; },
          pointHoverRadius: function (c) { return c.raw ? callStyle(c.raw.call).radius + 2 : 6; },
          pointBackgroundColor: function (c) { return c.raw ? callStyle(c.raw.call).colour : COLOURS.other; },
          pointBorderColor: "#fff",
          pointBorderWidth: 1,
          clip: false
        }]
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        layout: { padding: { top: 30, right: 8 } },
        scales: {
          x: dateAxis(xs),
          y: { beginAtZero: true, title: { display: true, text: "MTM/mL" }, grid: { color: "#eef0f4" } }
        },
        plugins: {
          legend: { display: false },
          stepdownMarkers: { marks: marks },
          tooltip: {
            callbacks: {
              title: function (items) { return items.length ? day(items[0].raw.x) : ""; },
              label: function (item) {
                var r = item.raw;
                return (r.call || "no call") + ", MTM/mL " + (r.mtm == null ? "not reported" : r.mtm);
              }
            }
          }
        }
      },
      plugins: [markers]
    });
  }

  function qolCharts(Chart, instruments) {
    instruments.forEach(function (inst) {
      var canvas = document.getElementById("qol-chart-" + inst.key);
      if (!canvas) return;
      var series = inst.series.filter(function (s) { return s.points.length; });
      var few = series.length <= 4;
      var ownUnits = series.some(function (s) { return s.type === "mean"; });
      var xs = [];
      var datasets = series.map(function (s, i) {
        var colour = PALETTE[i % PALETTE.length];
        var data = s.points.map(function (p) { xs.push(ms(p.date)); return { x: ms(p.date), y: p.score }; });
        return {
          label: s.label,
          data: data,
          parsing: false,
          yAxisID: s.type === "mean" ? "y1" : "y",
          borderColor: colour,
          backgroundColor: colour,
          pointRadius: 4,
          borderWidth: 2,
          // Many scales (QLQ-C30 has 15): start with global health; the legend shows the others.
          hidden: !(few || s.type === "global_health")
        };
      });
      if (!xs.length) return;
      var scales = {
        x: dateAxis(xs),
        y: { min: 0, max: 100, title: { display: true, text: "score (0–100)" }, grid: { color: "#eef0f4" } }
      };
      if (ownUnits) {
        scales.y1 = { position: "right", beginAtZero: true, title: { display: true, text: "mean (answer units)" }, grid: { display: false } };
      }
      new Chart(canvas, {
        type: "line",
        data: { datasets: datasets },
        options: {
          animation: false,
          maintainAspectRatio: false,
          scales: scales,
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 12, font: { size: 11 } } },
            tooltip: { callbacks: { title: function (items) { return items.length ? day(items[0].raw.x) : ""; } } }
          }
        }
      });
    });
  }

  function start() {
    var Chart = window.Chart;
    var data = readData();
    if (!Chart || !data) return;
    Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif';
    Chart.defaults.color = "#1d2330";
    if (data.results) ctdnaChart(Chart, data.results);
    if (data.qol) qolCharts(Chart, data.qol);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
