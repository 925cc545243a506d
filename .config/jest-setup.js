/*
 * Set-up for the plugins' jest tests (after @grafana/create-plugin's .config/jest-setup.js): jest-dom
 * matchers and what jsdom lacks but @grafana/ui uses.
 */
import '@testing-library/jest-dom';
import { TextDecoder, TextEncoder } from 'util';

Object.assign(global, { TextDecoder, TextEncoder });

Object.defineProperty(global, 'matchMedia', {
  writable: true,
  value: jest.fn().mockImplementation((query) => ({
    matches: false,
    media: query,
    onchange: null,
    addListener: jest.fn(),
    removeListener: jest.fn(),
    addEventListener: jest.fn(),
    removeEventListener: jest.fn(),
    dispatchEvent: jest.fn(),
  })),
});

HTMLCanvasElement.prototype.getContext = () => {};

if (!global.ResizeObserver) {
  global.ResizeObserver = class {
    observe() {}
    unobserve() {}
    disconnect() {}
  };
}

if (!global.IntersectionObserver) {
  global.IntersectionObserver = class {
    observe() {}
    unobserve() {}
    disconnect() {}
    takeRecords() {
      return [];
    }
  };
}

// i18next (inside @grafana/ui) advertises itself on console.info at start-up: keep test output clean.
const info = console.info;
console.info = (...args) => {
  if (typeof args[0] === 'string' && args[0].includes('i18next is made possible')) return;
  info(...args);
};
