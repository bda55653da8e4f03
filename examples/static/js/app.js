// No sidecar for this file: clients that accept gzip get it compressed on the
// fly (once, then from memory) when it is at least gzip_min_size bytes.
document.getElementById("status").textContent =
  "app.js loaded; reload and look for 304 Not Modified in your browser's network panel.";
