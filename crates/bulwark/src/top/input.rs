//! Which key means what in `bulwark top` (the model decides what it does in each window).

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::state::Key;

/// The meaning of a key press; `None` for a release or repeat report (kitty protocol), which
/// would otherwise act twice.
pub fn key(event: KeyEvent) -> Option<Key> {
    if event.kind == KeyEventKind::Release {
        return None;
    }
    // Alt-r is not r (and Esc followed at once by r reads as Alt-r).
    if event.modifiers.contains(KeyModifiers::ALT) {
        return Some(Key::Other);
    }
    if event.modifiers.contains(KeyModifiers::CONTROL) {
        // Raw mode turns Ctrl-C into a key, not SIGINT: it quits as it would anywhere.
        return Some(match event.code {
            KeyCode::Char('c' | 'C') => Key::Quit,
            _ => Key::Other,
        });
    }
    Some(match event.code {
        KeyCode::Char('q' | 'Q') => Key::Quit,
        KeyCode::Esc => Key::Back,
        KeyCode::Up | KeyCode::Char('k') => Key::Up,
        KeyCode::Down | KeyCode::Char('j') => Key::Down,
        KeyCode::PageUp => Key::PageUp,
        KeyCode::PageDown | KeyCode::Char(' ') => Key::PageDown,
        KeyCode::Home | KeyCode::Char('g') => Key::Home,
        KeyCode::End | KeyCode::Char('G') => Key::End,
        KeyCode::Enter | KeyCode::Char('l') => Key::Open,
        KeyCode::Char('r') => Key::Restart,
        KeyCode::Char('?' | 'h') => Key::Help,
        KeyCode::Char('y' | 'Y') => Key::Yes,
        KeyCode::Char('n' | 'N') => Key::No,
        _ => Key::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode) -> Option<Key> {
        key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn keys_of_the_help_mean_what_it_says() {
        assert_eq!(press(KeyCode::Char('q')), Some(Key::Quit));
        assert_eq!(press(KeyCode::Esc), Some(Key::Back));
        assert_eq!(
            key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Key::Quit)
        );
        assert_eq!(
            key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::CONTROL)),
            Some(Key::Other),
            "Ctrl-R is not r"
        );
        assert_eq!(
            key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::ALT)),
            Some(Key::Other)
        );
        assert_eq!(
            key(KeyEvent::new(KeyCode::Char('G'), KeyModifiers::SHIFT)),
            Some(Key::End)
        );
        assert_eq!(press(KeyCode::Up), Some(Key::Up));
        assert_eq!(press(KeyCode::Char('k')), Some(Key::Up));
        assert_eq!(press(KeyCode::Down), Some(Key::Down));
        assert_eq!(press(KeyCode::Char('j')), Some(Key::Down));
        assert_eq!(press(KeyCode::Enter), Some(Key::Open));
        assert_eq!(press(KeyCode::Char('l')), Some(Key::Open));
        assert_eq!(press(KeyCode::Char('r')), Some(Key::Restart));
        assert_eq!(press(KeyCode::Char('?')), Some(Key::Help));
        assert_eq!(press(KeyCode::Char('y')), Some(Key::Yes));
        assert_eq!(press(KeyCode::Char('x')), Some(Key::Other));
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(key(release), None);
    }
}
