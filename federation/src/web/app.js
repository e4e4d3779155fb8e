// MedTech Chain query builder: offer only the operators valid for each filter row's field and
// only the targets valid for the chosen query kind. Everything is checked again on the server;
// without JavaScript the form still works and invalid choices get a clear error.
(function () {
  "use strict";
  function syncOps(row) {
    var field = row.querySelector("select.field");
    var op = row.querySelector("select.op");
    if (!field || !op) { return; }
    var opt = field.options[field.selectedIndex];
    var type = opt ? opt.getAttribute("data-type") : "";
    var firstValid = null;
    Array.prototype.forEach.call(op.options, function (o) {
      var ok = !type || (o.getAttribute("data-types") || "").split(" ").indexOf(type) >= 0;
      o.hidden = !ok; o.disabled = !ok;
      if (ok && firstValid === null) { firstValid = o; }
    });
    if (op.selectedOptions.length && op.selectedOptions[0].disabled && firstValid) { firstValid.selected = true; }
  }
  function syncTargets(form) {
    var kind = form.querySelector("select[name=kind]");
    var target = form.querySelector("select[name=target]");
    if (!kind || !target) { return; }
    Array.prototype.forEach.call(target.querySelectorAll("optgroup"), function (g) {
      var ok = g.getAttribute("data-kind") === kind.value;
      g.hidden = !ok;
      Array.prototype.forEach.call(g.querySelectorAll("option"), function (o) { o.disabled = !ok; });
    });
    if (target.selectedOptions.length && target.selectedOptions[0].disabled) { target.value = ""; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll(".filter"), function (row) {
      var f = row.querySelector("select.field");
      if (f) { f.addEventListener("change", function () { syncOps(row); }); }
      syncOps(row);
    });
    var form = document.getElementById("query-form");
    if (form) {
      var k = form.querySelector("select[name=kind]");
      if (k) { k.addEventListener("change", function () { syncTargets(form); }); }
      syncTargets(form);
    }
  });
})();
