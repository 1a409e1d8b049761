// Draws the dashboards' charts with the vendored Apache ECharts. Each chart is a
// <div class="chart" data-chart="ID"> whose data the server renders into a JSON script
// element with that ID: {title, categories, series: [{name, data}], unit}.
(function () {
  "use strict";

  function draw(element) {
    var source = document.getElementById(element.dataset.chart);
    if (!source || typeof echarts === "undefined") {
      return;
    }
    var spec = JSON.parse(source.textContent);
    var histogram = element.dataset.type === "histogram";
    var stacked = element.dataset.stack === "1";
    var chart = echarts.init(element, null, { renderer: "canvas" });
    chart.setOption({
      // The panel's heading names the figure; the title stays for screen readers.
      aria: { enabled: true, label: { description: spec.title } },
      tooltip: { trigger: "axis", axisPointer: { type: "shadow" } },
      legend: spec.series.length > 1 ? { top: 0 } : undefined,
      grid: { left: 60, right: 20, top: 40, bottom: 60 },
      xAxis: {
        type: "category",
        data: spec.categories,
        axisLabel: { interval: 0, rotate: spec.categories.length > 8 ? 30 : 0 },
      },
      yAxis: { type: "value", name: spec.unit },
      series: spec.series.map(function (s) {
        return {
          name: s.name,
          type: "bar",
          data: s.data,
          stack: stacked ? "total" : undefined,
          barCategoryGap: histogram ? "2%" : "30%",
          label: { show: !stacked && !histogram && s.data.length <= 12, position: "top" },
        };
      }),
    });
    window.addEventListener("resize", function () {
      chart.resize();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".chart[data-chart]").forEach(draw);
  });
})();
