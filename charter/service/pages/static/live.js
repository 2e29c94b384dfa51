// Keeps a running job's counts current by polling its progress JSON; the page reads the
// same without it (reload to update). Values go in with textContent, never as HTML.
(function () {
  "use strict";
  var status = document.getElementById("status");
  if (!status) { return; }
  var url = status.getAttribute("data-progress");
  function update() {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        Object.keys(data).forEach(function (k) {
          var el = status.querySelector('[data-live="' + k + '"]');
          if (el) { el.textContent = String(data[k]); }
        });
        var bar = status.querySelector("[data-live-progress]");
        if (bar) { bar.max = data.total; bar.value = data.done; }
        if (data.state === "running" || data.state === "queued" || data.state === "waiting") {
          setTimeout(update, 2000);
        } else {
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(update, 5000); });
  }
  setTimeout(update, 2000);
})();
