// probed status page: refresh the server-rendered page in place, without a reload.
// The page works without this script (it is rendered on the server); with it, the
// page is fetched again every data-refresh seconds and the parts that changed are
// swapped in, keeping keyboard focus where it was.
(function () {
  "use strict";
  var body = document.body;
  var every = Math.max(1, Number(body.getAttribute("data-refresh")) || 10) * 1000;
  var connection = document.getElementById("connection");

  function swapText(doc, id) {
    var old = document.getElementById(id);
    var fresh = doc.getElementById(id);
    if (!old || !fresh) return;
    if (old.textContent !== fresh.textContent) old.textContent = fresh.textContent;
    if (old.className !== fresh.className) old.className = fresh.className;
    if (fresh.hasAttribute("datetime")) old.setAttribute("datetime", fresh.getAttribute("datetime"));
  }

  function swapSections(doc) {
    var main = document.getElementById("services");
    var freshMain = doc.getElementById("services");
    if (!main || !freshMain) return;
    var focusedId = document.activeElement && document.activeElement.id;
    var oldIds = Array.prototype.map.call(main.children, function (e) { return e.id; }).join(" ");
    var newIds = Array.prototype.map.call(freshMain.children, function (e) { return e.id; }).join(" ");
    if (oldIds !== newIds) {
      main.replaceWith(document.importNode(freshMain, true));
    } else {
      Array.prototype.forEach.call(freshMain.children, function (fresh) {
        var old = document.getElementById(fresh.id);
        if (old && old.outerHTML !== fresh.outerHTML) old.replaceWith(document.importNode(fresh, true));
      });
    }
    if (focusedId && document.activeElement === body) {
      var again = document.getElementById(focusedId);
      if (again) again.focus({ preventScroll: true });
    }
  }

  function refresh() {
    fetch(window.location.pathname, { cache: "no-store", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        swapSections(doc);
        swapText(doc, "overall");
        swapText(doc, "updated");
        connection.textContent = "";
        body.classList.remove("stale");
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () {
        body.classList.add("stale");
        connection.textContent = "Cannot reach the status server; retrying.";
      })
      .then(function () { window.setTimeout(refresh, every); });
  }

  window.setTimeout(refresh, every);
})();
