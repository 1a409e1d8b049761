// Draws the dashboards' charts with the vendored Apache ECharts. Each chart is a
// <div class="chart" data-chart="ID"> whose data the server renders into a JSON script
// element with that ID: {title, categories, series: [{name, data}], unit, axis, places}.
// Numbers are printed as the pages print them (billing.formatting): thousands separated
// by commas whatever the browser's locale, so a bar reads like the table beside it.
(function () {
  "use strict";

  // `places`: the decimals the page prints the figure with (the chart's "places", e.g. 1
  // for a share in %, as its table); by default none for a whole number, else two.
  function formatted(value, places) {
    if (places === undefined) {
      places = Math.round(value) === value ? 0 : 2;
    }
    var parts = Math.abs(value).toFixed(places).split(".");
    parts[0] = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (value < 0 ? "-" : "") + parts.join(".");
  }

  function draw(element) {
    var source = document.getElementById(element.dataset.chart);
    if (!source || typeof echarts === "undefined") {
      return;
    }
    var spec = JSON.parse(source.textContent);
    var figure = function (value) {
      return formatted(value, spec.places);
    };
    var histogram = element.dataset.type === "histogram";
    var stacked = element.dataset.stack === "1";
    var totals = spec.categories.map(function (_c, i) {
      return spec.series.reduce(function (sum, s) {
        return sum + (s.data[i] || 0);
      }, 0);
    });
    var last = spec.series.length - 1;
    var chart = echarts.init(element, null, { renderer: "canvas" });
    chart.setOption({
      // The panel's heading names the figure; the title stays for screen readers.
      aria: { enabled: true, label: { description: spec.title } },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" }, valueFormatter: figure },
      legend: spec.series.length > 1 ? { top: 0 } : undefined,
      grid: { left: 70, right: 30, top: 40, bottom: 70, containLabel: true },
      xAxis: {
        type: "category",
        data: spec.categories,
        name: spec.axis,
        nameLocation: "middle",
        nameGap: spec.categories.length > 8 ? 55 : 30,
        axisLabel: { interval: 0, rotate: spec.categories.length > 8 ? 30 : 0 },
      },
      // ECharts calls an axis label's formatter with (value, index): the index is no
      // number of decimals (the ticks read 0, 3,000.0, 6,000.00, 9,000.000, ...).
      yAxis: {
        type: "value",
        name: spec.unit,
        axisLabel: {
          formatter: function (value) {
            return formatted(value);
          },
        },
      },
      series: spec.series.map(function (s, index) {
        // Every bar carries its value; a stack carries its total on its top segment.
        var label = { show: true, position: "top", fontSize: histogram ? 10 : 12 };
        if (stacked) {
          label.show = index === last;
          label.formatter = function (p) {
            return figure(totals[p.dataIndex]);
          };
        } else {
          label.formatter = function (p) {
            return figure(p.value);
          };
        }
        return {
          name: s.name,
          type: "bar",
          data: s.data,
          stack: stacked ? "total" : undefined,
          barCategoryGap: histogram ? "2%" : "30%",
          label: label,
        };
      }),
    });
    window.addEventListener("resize", function () {
      chart.resize();
    });
  }

  // A printed page shows the stage tables that are closed on screen: the print stylesheet
  // opens them where the browser lets it style a closed <details> (::details-content);
  // elsewhere they are opened for the printout and closed again after it.
  function printStages() {
    var opened = [];
    window.addEventListener("beforeprint", function () {
      document.querySelectorAll("details.stages:not([open])").forEach(function (details) {
        details.open = true;
        opened.push(details);
      });
    });
    window.addEventListener("afterprint", function () {
      opened.splice(0).forEach(function (details) {
        details.open = false;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".chart[data-chart]").forEach(draw);
    printStages();
  });
})();
