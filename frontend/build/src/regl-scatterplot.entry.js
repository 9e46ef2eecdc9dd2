// Entry of the vendored scatter-plot bundle: regl-scatterplot with its peer dependencies (regl, pub-sub-es)
// inlined, so the explorer imports one local ES module and nothing from a CDN.
export {
  checkSupport,
  createRegl,
  createRenderer,
  createSpatialIndex,
  default as createScatterplot,
} from "regl-scatterplot";
