// Concept card behaviour, by event delegation so it works on the card page and on every card swapped in by htmx:
// the heatmap opacity slider, and the label form's error message when the server refuses a label (422).

document.addEventListener("input", (event) => {
  const slider = event.target.closest?.("[data-heat-opacity]");
  if (!slider) return;
  slider.closest(".card")?.style.setProperty("--heat", slider.value);
});

document.addEventListener("htmx:responseError", (event) => {
  const form = event.detail.elt?.closest?.(".label-form");
  if (!form) return;
  let message = `the label was not saved (${event.detail.xhr.status})`;
  try {
    message = JSON.parse(event.detail.xhr.responseText).detail ?? message;
  } catch {
    // keep the status message
  }
  const slot = form.querySelector(".error");
  if (slot) slot.textContent = typeof message === "string" ? message : JSON.stringify(message);
});
