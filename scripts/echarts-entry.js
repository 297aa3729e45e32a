// The ECharts build the app ships (scripts/lib.sh `build_site` bundles it with esbuild from the
// npm package): only the chart types and components the charts use (app/src/charts/draw.rs —
// line and bar series on a cartesian grid with value, category and log axes, a tooltip and a
// legend), drawn on a canvas. charming calls the global `echarts.init`.
import * as echarts from "echarts/core";
import { BarChart, LineChart } from "echarts/charts";
import { GridComponent, LegendComponent, TooltipComponent } from "echarts/components";
import { CanvasRenderer } from "echarts/renderers";

echarts.use([LineChart, BarChart, GridComponent, TooltipComponent, LegendComponent, CanvasRenderer]);
window.echarts = echarts;
