// Fleet filters apply as soon as one is changed.
"use strict";
for (const select of document.querySelectorAll(".filters select")) {
  select.addEventListener("change", () => select.form.submit());
}
