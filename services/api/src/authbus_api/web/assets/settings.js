// The settings page's only script (issue #12): the copy button beside a new secret. Without
// JavaScript the button stays hidden and the secret can be selected and copied by hand.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    const status = document.getElementById("copy-status");
    button.hidden = false;
    button.addEventListener("click", async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
      } catch {
        document.execCommand("copy");
      }
      if (status) status.textContent = button.dataset.copied;
    });
  }
});
