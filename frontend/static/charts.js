// Server-drawn charts too large for a link per point (backend/svg.py, more than 2,000 points) say where their frame
// and domains are; a click inside the frame goes to the chart's pick URL with the clicked data coordinates, which
// answers with the nearest point's page. By event delegation, so charts swapped in by htmx work too.

function toData(pixel, start, end, low, high, log) {
  const fraction = (pixel - start) / (end - start);
  if (!log) return low + fraction * (high - low);
  return 10 ** (Math.log10(low) + fraction * (Math.log10(high) - Math.log10(low)));
}

document.addEventListener("click", (event) => {
  const chart = event.target.closest?.("svg[data-pick-url]");
  if (!chart) return;
  const at = new DOMPoint(event.clientX, event.clientY).matrixTransform(chart.getScreenCTM().inverse());
  const [x0, x1, y0, y1] = chart.dataset.pickFrame.split(" ").map(Number);
  if (at.x < x0 || at.x > x1 || at.y > y0 || at.y < y1) return;
  const [xLow, xHigh, yLow, yHigh] = chart.dataset.pickDomain.split(" ").map(Number);
  const log = chart.dataset.pickLog;
  const x = toData(at.x, x0, x1, xLow, xHigh, log.includes("x"));
  const y = toData(at.y, y0, y1, yLow, yHigh, log.includes("y"));
  window.location.href = `${chart.dataset.pickUrl}&at_x=${x.toFixed(5)}&at_y=${y.toFixed(5)}`;
});
