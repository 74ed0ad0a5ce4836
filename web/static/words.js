// People's words for the codes a page script shows itself (an agent's state from a socket
// delta, a call's state on the board). The map comes from the server once per page
// (web/dashboard/words.py, in base.html): no script keeps a dictionary of its own.
"use strict";
window.sbWords = (() => {
  const node = document.getElementById("sb-words");
  const tables = node ? JSON.parse(node.textContent) : {};
  return {
    // A code the map does not know yet is spelled out, never shown as an identifier.
    say(table, code) {
      if (code === null || code === undefined) return "";
      const known = (tables[table] || {})[code];
      if (known !== undefined) return known;
      const spelled = String(code).replace(/_/g, " ");
      return spelled.charAt(0).toUpperCase() + spelled.slice(1);
    },
    // Whether the map has words for a code (else a page shows what it has instead).
    has(table, code) {
      return Object.prototype.hasOwnProperty.call(tables[table] || {}, code);
    },
    // "0:42": what is left of a wrap-up, how long a call has lasted.
    clock(seconds) {
      const s = Math.max(0, Math.floor(seconds));
      return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    },
  };
})();
