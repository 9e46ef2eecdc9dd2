// The steering panel: its result and sweep slots show the server's answer whatever the status (a 422 names the bad field,
// a 429 says the queue is full and retries by itself), where htmx would otherwise drop error responses.
document.addEventListener("htmx:beforeSwap", (event) => {
  const slot = event.detail.target?.id;
  if ((slot === "steer-result" || slot === "steer-sweep") && event.detail.xhr.status >= 400) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
