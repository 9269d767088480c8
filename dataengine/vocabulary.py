"""The normalised category vocabulary of the data engine.

Every clip of the source library maps to exactly one category. A category has a group
(``speech | music | animals | events | ambience``), several audio phrasings used as training
prompts, a few phrasings held out for benchmarks (never used in training), visual captions, and
an emoji used to render a picture prompt. :func:`categorize` maps free text (file names, titles)
to a category with ordered keyword rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

GROUPS = ("speech", "music", "animals", "events", "ambience")


@dataclass(frozen=True)
class Category:
    """One entry of the vocabulary."""

    name: str
    group: str
    emoji: str
    phrasings: tuple[str, ...]
    heldout: tuple[str, ...]
    visual: tuple[str, ...] = field(default=())


def _c(name: str, group: str, emoji: str, phrasings: list[str], heldout: list[str], visual: list[str]) -> Category:
    return Category(name, group, emoji, tuple([name, *phrasings]), tuple(heldout), tuple(visual))


CATEGORIES: dict[str, Category] = {
    c.name: c
    for c in [
        # speech
        _c("male speech", "speech", "🗣️", ["a man speaking", "a man talks", "male voice", "a man's voice saying something", "the sound of a man talking"], ["a gentleman speaks", "adult male talking"], ["a photo of a man talking", "a man speaking into a microphone"]),
        _c("female speech", "speech", "👩", ["a woman speaking", "a woman talks", "female voice", "a woman's voice saying something", "the sound of a woman talking"], ["a lady speaks", "adult female talking"], ["a photo of a woman talking", "a woman speaking into a microphone"]),
        _c("spanish speech", "speech", "🇪🇸", ["someone speaking spanish", "a voice talking in spanish", "spanish spoken words", "a person talks in spanish"], ["speech in castilian", "a spanish speaker"], ["a flag of spain", "a person from spain talking"]),
        _c("french speech", "speech", "🇫🇷", ["someone speaking french", "a voice talking in french", "french spoken words", "a person talks in french"], ["speech in the french language", "a francophone speaker"], ["a flag of france", "a person from france talking"]),
        _c("russian speech", "speech", "🇷🇺", ["someone speaking russian", "a voice talking in russian", "russian spoken words", "a person talks in russian"], ["speech in the russian language", "a russian speaker"], ["a flag of russia", "a person from russia talking"]),
        _c("greek speech", "speech", "🇬🇷", ["someone speaking greek", "a voice talking in greek", "greek spoken words", "a person talks in greek"], ["speech in the greek language", "a greek speaker"], ["a flag of greece", "a person from greece talking"]),
        _c("german speech", "speech", "🇩🇪", ["someone speaking german", "a voice talking in german", "german spoken words", "a person talks in german"], ["speech in the german language", "a german speaker"], ["a flag of germany", "a person from germany talking"]),
        _c("singing", "speech", "🎤", ["a person singing", "a singer", "vocals", "someone sings a melody", "a singing voice"], ["a vocalist performing", "sung vocals"], ["a singer with a microphone", "a photo of a person singing"]),
        # music
        _c("piano", "music", "🎹", ["piano playing", "a piano", "someone plays the piano", "piano music", "keys of a piano"], ["a grand piano performance", "pianist playing"], ["a photo of a piano", "piano keys"]),
        _c("organ", "music", "⛪", ["an organ playing", "organ music", "a church organ", "pipe organ chords"], ["an organist playing", "sustained organ tones"], ["a pipe organ in a church", "a photo of an organ"]),
        _c("guitar", "music", "🎸", ["a guitar", "guitar playing", "someone strums a guitar", "plucked guitar strings", "guitar music"], ["a guitarist playing", "six string guitar"], ["a photo of a guitar", "a person holding a guitar"]),
        _c("bass", "music", "🎸", ["a bass guitar", "bass line", "low bass notes", "a bass playing"], ["a deep bassline", "bass instrument grooving"], ["a bass guitar", "a photo of a bass player"]),
        _c("strings", "music", "🎻", ["a violin", "string instruments", "a cello playing", "bowed strings", "a string section"], ["a fiddle playing", "orchestral strings"], ["a photo of a violin", "a violinist playing"]),
        _c("flute", "music", "🪈", ["a flute", "flute playing", "someone plays the flute", "a recorder melody", "a wind pipe melody"], ["a piccolo tune", "a flautist"], ["a photo of a flute", "a person playing the flute"]),
        _c("woodwinds", "music", "🎷", ["a clarinet", "a saxophone", "an oboe playing", "reed instrument", "woodwind instrument"], ["a bassoon melody", "a sax solo"], ["a photo of a saxophone", "a clarinet player"]),
        _c("brass", "music", "🎺", ["a trumpet", "brass instruments", "a trombone playing", "a horn section", "a tuba"], ["a brass band", "blaring trumpet"], ["a photo of a trumpet", "a brass band playing"]),
        _c("choir", "music", "🎶", ["a choir", "choir singing", "a chorus of voices", "choral aahs", "voices singing together"], ["an ensemble of singers", "choral music"], ["a choir on a stage", "a group of singers"]),
        _c("harp", "music", "🪕", ["a harp", "harp playing", "plucked harp strings", "a harpist"], ["an arpeggiated harp", "a concert harp"], ["a photo of a harp", "a harpist playing"]),
        _c("bells", "music", "🔔", ["a xylophone", "a glockenspiel", "mallet percussion", "a marimba", "chiming bells melody"], ["a vibraphone", "tubular bells"], ["a xylophone with mallets", "a photo of a glockenspiel"]),
        _c("accordion", "music", "🪗", ["an accordion", "accordion music", "a harmonica", "a squeezebox playing"], ["a concertina", "bellows instrument"], ["a photo of an accordion", "an accordion player"]),
        _c("synthesizer", "music", "🎛️", ["a synthesizer", "synth sounds", "electronic synth tones", "a synth lead", "an electronic keyboard"], ["analog synth", "electronic music tones"], ["a synthesizer keyboard", "a modular synth"]),
        _c("drums", "music", "🥁", ["drums", "a drum kit", "a drum beat", "someone playing drums", "a snare and kick drum"], ["a drummer", "percussive drum groove"], ["a photo of a drum kit", "a drummer playing"]),
        _c("cymbal", "music", "🥁", ["a cymbal", "cymbal crash", "a hi-hat", "a ride cymbal", "metallic cymbal hit"], ["a crashing cymbal", "hi hat ticking"], ["a photo of a cymbal", "cymbals on a drum kit"]),
        _c("percussion", "music", "🪘", ["percussion", "hand drums", "a tambourine", "a shaker", "bongos and congas"], ["a tabla", "rhythmic hand percussion"], ["bongo drums", "a photo of percussion instruments"]),
        _c("music", "music", "🎼", ["background music", "a song", "instrumental music", "a piece of music", "music playing"], ["a musical track", "a tune playing"], ["musical notes", "a music score"]),
        # animals
        _c("dog", "animals", "🐶", ["dog barking", "a barking dog", "canine barks", "the sound of a dog", "a dog woofs"], ["a puppy yelping", "a hound barking"], ["a photo of a dog", "a dog"]),
        _c("cat", "animals", "🐱", ["a cat meowing", "a meowing cat", "feline meows", "the sound of a cat", "a kitten mewing"], ["a cat purring", "a kitty"], ["a photo of a cat", "a cat"]),
        _c("bird", "animals", "🐦", ["birds chirping", "a bird singing", "birdsong", "tweeting birds", "the sound of a bird"], ["songbirds", "a bird call"], ["a photo of a bird", "a bird on a branch"]),
        _c("chicken", "animals", "🐔", ["a rooster crowing", "chickens clucking", "a hen", "a cockerel crows", "the sound of chickens"], ["poultry clucking", "cock-a-doodle-doo"], ["a photo of a chicken", "a rooster"]),
        _c("duck", "animals", "🦆", ["a duck quacking", "ducks quack", "the sound of a duck", "a quacking duck"], ["waterfowl quacking", "a goose honking"], ["a photo of a duck", "a duck on a pond"]),
        _c("cow", "animals", "🐮", ["a cow mooing", "cattle lowing", "the sound of a cow", "a mooing cow", "a bull"], ["a moo", "bovine sounds"], ["a photo of a cow", "a cow in a field"]),
        _c("horse", "animals", "🐴", ["a horse neighing", "horse hooves galloping", "the sound of a horse", "a whinnying horse"], ["a horse trotting", "a pony neighs"], ["a photo of a horse", "a horse galloping"]),
        _c("sheep", "animals", "🐑", ["sheep bleating", "a goat bleats", "the sound of sheep", "a bleating lamb"], ["baa of a sheep", "a flock of sheep"], ["a photo of a sheep", "a lamb"]),
        _c("pig", "animals", "🐷", ["a pig oinking", "pigs grunting", "the sound of a pig", "a snorting pig"], ["a hog squealing", "swine oink"], ["a photo of a pig", "a pig in the mud"]),
        _c("wolf", "animals", "🐺", ["a wolf howling", "a howling wolf", "wolf growls", "the sound of a wolf"], ["a coyote howl", "wolves snarling"], ["a photo of a wolf", "a wolf howling at the moon"]),
        _c("big cat", "animals", "🦁", ["a lion roaring", "a tiger growls", "a roaring lion", "the roar of a big cat"], ["a jungle cat roar", "a panther snarling"], ["a photo of a lion", "a tiger"]),
        _c("frog", "animals", "🐸", ["a frog croaking", "frogs croak", "the sound of a frog", "a croaking toad"], ["amphibians ribbiting", "a bullfrog"], ["a photo of a frog", "a frog on a lily pad"]),
        _c("insect", "animals", "🦗", ["crickets chirping", "a buzzing bee", "insects buzzing", "a mosquito", "the sound of insects"], ["cicadas", "a fly buzzing"], ["a photo of a cricket", "a bee on a flower"]),
        _c("monkey", "animals", "🐵", ["a monkey screeching", "apes hooting", "the sound of a monkey", "a chimpanzee calls"], ["primates chattering", "a gorilla"], ["a photo of a monkey", "a chimpanzee"]),
        _c("owl", "animals", "🦉", ["an owl hooting", "a hooting owl", "the sound of an owl", "owl hoots at night"], ["a barn owl call", "who-who of an owl"], ["a photo of an owl", "an owl on a branch"]),
        _c("elephant", "animals", "🐘", ["an elephant trumpeting", "the sound of an elephant", "an elephant calls"], ["a pachyderm trumpet", "elephant roar"], ["a photo of an elephant", "an elephant"]),
        _c("sea mammal", "animals", "🦭", ["a sea lion barking", "a seal calls", "a dolphin clicking", "a whale singing"], ["marine mammal sounds", "whale song"], ["a photo of a sea lion", "a dolphin"]),
        # events
        _c("door", "events", "🚪", ["a door closing", "a door opening", "a creaking door", "a door slams", "the sound of a door"], ["a gate shutting", "door hinges squeak"], ["a photo of a door", "a wooden door"]),
        _c("footsteps", "events", "👣", ["footsteps", "someone walking", "steps on the ground", "a person walking by", "the sound of footsteps"], ["feet shuffling", "walking on gravel"], ["footprints", "a person walking"]),
        _c("engine", "events", "🚗", ["a car engine", "an engine running", "a car passing by", "a motor revving", "a vehicle driving"], ["a truck idling", "a motorcycle accelerating"], ["a photo of a car", "a car on a road"]),
        _c("train", "events", "🚂", ["a train passing", "a steam train", "a locomotive", "the sound of a train", "a railway train"], ["a train on tracks", "a subway train"], ["a photo of a train", "a steam locomotive"]),
        _c("aircraft", "events", "✈️", ["an airplane flying", "a jet taking off", "a helicopter", "the sound of a plane", "an aircraft overhead"], ["a propeller plane", "jet engine roar"], ["a photo of an airplane", "a helicopter in the sky"]),
        _c("explosion", "events", "💥", ["an explosion", "a blast", "a bomb exploding", "a loud boom", "the sound of an explosion"], ["a detonation", "fireworks bang"], ["an explosion", "a cartoon blast"]),
        _c("gunshot", "events", "🔫", ["a gunshot", "a gun firing", "shots fired", "a rifle shot"], ["a pistol shot", "gunfire"], ["a photo of a gun", "a pistol"]),
        _c("bell", "events", "🛎️", ["a bell ringing", "a ringing bell", "a church bell tolls", "a chime", "a telephone ringing"], ["a bell dings", "a doorbell"], ["a photo of a bell", "a church bell"]),
        _c("glass", "events", "🥛", ["glass breaking", "shattering glass", "glasses clinking", "a bottle clinks"], ["a window smashes", "clinking glassware"], ["a glass", "broken glass"]),
        _c("water", "events", "💧", ["water splashing", "water dripping", "bubbles", "a splash", "a drop of water"], ["pouring water", "liquid gurgling"], ["a water drop", "a splash of water"]),
        _c("applause", "events", "👏", ["applause", "people clapping", "hands clapping", "an audience applauding"], ["a round of applause", "clapping crowd"], ["clapping hands", "an audience applauding"]),
        _c("laughter", "events", "😂", ["laughter", "a person laughing", "someone laughs", "giggling"], ["a chuckle", "people laughing"], ["a laughing face", "a person laughing"]),
        _c("scream", "events", "😱", ["a scream", "someone screaming", "a shout", "a yell of fear"], ["a shriek", "a person yelling"], ["a screaming face", "a person screaming"]),
        _c("baby crying", "events", "👶", ["a baby crying", "an infant cries", "a crying baby", "a baby wailing"], ["a newborn sobbing", "a toddler crying"], ["a photo of a baby", "a crying infant"]),
        _c("cough", "events", "🤧", ["a cough", "someone coughing", "a sneeze", "a person sneezes"], ["clearing the throat", "a hacking cough"], ["a person sneezing", "a sick person"]),
        _c("grunt", "events", "😫", ["a grunt of pain", "a groan", "someone grunting", "a dying groan", "a person moaning"], ["an injured grunt", "a cry of pain"], ["a person in pain", "a wounded warrior"]),
        _c("knock", "events", "✊", ["knocking", "a knock on the door", "tapping on wood", "a wooden knock"], ["rapping on a door", "a thud on wood"], ["a fist knocking", "a hand knocking on a door"]),
        _c("clock", "events", "⏰", ["a clock ticking", "ticking of a clock", "a timer", "a tick tock"], ["an alarm clock", "a stopwatch ticking"], ["a photo of a clock", "an alarm clock"]),
        _c("horn", "events", "📯", ["a horn honking", "a car horn", "a ship's horn", "a hooter blaring"], ["a foghorn", "an air horn"], ["a horn", "a ship blowing its horn"]),
        _c("typing", "events", "⌨️", ["typing on a keyboard", "keyboard clicks", "a typewriter", "someone typing"], ["keystrokes", "clacking keys"], ["a computer keyboard", "a typewriter"]),
        _c("beep", "events", "📟", ["a beep", "electronic beeps", "a computer bleep", "a notification sound", "a blip"], ["an alert tone", "a digital chime"], ["a pager", "an electronic device"]),
        _c("impact", "events", "🔨", ["a hit", "an impact", "something thuds", "a punch", "a thump"], ["a collision", "a heavy blow"], ["a hammer", "something hitting the ground"]),
        _c("crash", "events", "🚧", ["a crash", "a car crash", "things crashing down", "a loud smash"], ["a collision of vehicles", "debris falling"], ["a car crash", "a pile of debris"]),
        _c("whoosh", "events", "💨", ["a whoosh", "a swish", "something swooshing past", "a sword swinging"], ["a swoosh", "a fast swipe"], ["a gust", "a swinging sword"]),
        _c("tools", "events", "🪚", ["a saw cutting", "a hammer hitting", "a drill", "power tools", "a chainsaw"], ["a jackhammer", "construction tools"], ["a saw", "a toolbox"]),
        _c("machine", "events", "⚙️", ["a machine running", "factory machinery", "a washing machine", "a sewing machine", "a vacuum cleaner"], ["industrial machinery", "a motor humming"], ["gears of a machine", "a factory"]),
        _c("coins", "events", "🪙", ["coins clinking", "money jingling", "a cash register", "coins dropping"], ["a till opening", "loose change"], ["a pile of coins", "a cash register"]),
        _c("laser", "events", "👾", ["a laser", "sci-fi sounds", "a spaceship zap", "an alien sound", "a magic spell"], ["a ray gun", "a science fiction effect"], ["a laser beam", "an alien spaceship"]),
        _c("cartoon", "events", "🎈", ["a cartoon boing", "a pop", "a comic sound effect", "a squeak", "a bouncy boing"], ["a goofy sound effect", "a plop"], ["a balloon", "a cartoon"]),
        _c("digging", "events", "⛏️", ["digging", "a shovel in dirt", "a pickaxe hitting rock", "scraping soil"], ["excavating ground", "crunching gravel"], ["a pickaxe", "a shovel"]),
        # ambience
        _c("wind", "ambience", "🌬️", ["wind blowing", "a strong wind", "wind howling", "a gust of wind", "the sound of wind"], ["a breeze", "a gale"], ["a windy landscape", "wind blowing leaves"]),
        _c("rain", "ambience", "🌧️", ["rain falling", "rainfall", "a rainstorm", "raindrops", "the sound of rain"], ["a downpour", "drizzle"], ["rain clouds", "a rainy street"]),
        _c("thunder", "ambience", "⛈️", ["thunder", "a thunderstorm", "thunder rumbling", "lightning and thunder"], ["a thunderclap", "a storm rumble"], ["a lightning bolt", "a stormy sky"]),
        _c("fire", "ambience", "🔥", ["fire crackling", "a crackling campfire", "flames burning", "the sound of fire"], ["a fireplace", "burning wood"], ["a campfire", "flames"]),
        _c("stream", "ambience", "🌊", ["a river flowing", "a stream", "running water", "a waterfall", "flowing water"], ["a babbling brook", "water rushing"], ["a river", "a waterfall"]),
        _c("crowd", "ambience", "👥", ["a crowd", "people chattering", "a busy restaurant", "a party", "background chatter"], ["a noisy crowd", "murmuring people"], ["a crowd of people", "a party"]),
        _c("drone", "ambience", "🌌", ["a drone", "a low hum", "an ambient drone", "an eerie hum", "a buzzing hum"], ["a dark ambient pad", "electrical hum"], ["a dark space", "an empty hall"]),
        _c("nature", "ambience", "🌳", ["nature ambience", "a forest at night", "outdoor ambience", "morning in the countryside"], ["a field ambience", "the outdoors"], ["a forest", "a meadow"]),
    ]
}

# Short wordings the way people type a search ("the dog", "barking", "people talking in a bar"), two per category,
# written after every model was trained. Neither training nor prompt anchoring reads them (anchors are the training
# phrasings); they are a second set of unseen wordings for benchmarks, besides the held-out paraphrases.
USER_WORDINGS: dict[str, tuple[str, ...]] = {
    "male speech": ("the guy talking", "a deep male voice narrating"),
    "female speech": ("the woman's voice", "a girl talking"),
    "spanish speech": ("somebody talking in español", "a spanish conversation"),
    "french speech": ("a man speaking in french", "parisian talk"),
    "russian speech": ("words spoken in russian", "a russian man talking"),
    "greek speech": ("a woman talking greek", "greek language dialogue"),
    "german speech": ("german words", "someone talking in deutsch"),
    "singing": ("the singer's voice", "a woman singing a song"),
    "piano": ("the piano part", "piano chords"),
    "organ": ("church organ music", "an organ chord"),
    "guitar": ("acoustic guitar", "electric guitar riff"),
    "bass": ("the bassline", "an electric bass"),
    "strings": ("violins playing", "a cello"),
    "flute": ("the flute melody", "a tin whistle"),
    "woodwinds": ("saxophone playing", "clarinet melody"),
    "brass": ("trumpets", "a french horn"),
    "choir": ("a choir of voices", "church choir singing"),
    "harp": ("the harp", "harp glissando"),
    "bells": ("marimba notes", "xylophone melody"),
    "accordion": ("accordion playing", "harmonica blues"),
    "synthesizer": ("synth pad", "electronic synthesizer"),
    "drums": ("the drums", "drum loop"),
    "cymbal": ("crash cymbal", "hi-hats"),
    "percussion": ("congas", "a tambourine shaking"),
    "music": ("the music", "a melody playing in the background"),
    "dog": ("the dog", "barking"),
    "cat": ("a cat", "meowing"),
    "bird": ("a bird", "birds singing outside"),
    "chicken": ("a hen clucking", "rooster"),
    "duck": ("ducks", "quacking"),
    "cow": ("a cow", "cows mooing in a field"),
    "horse": ("a horse", "neighing horse"),
    "sheep": ("a sheep", "goats bleating"),
    "pig": ("a pig", "oinking"),
    "wolf": ("wolves howling", "a wolf"),
    "big cat": ("a lion", "tiger roar"),
    "frog": ("frogs", "croaking"),
    "insect": ("a bee", "crickets at night"),
    "monkey": ("a chimp screaming", "monkeys"),
    "owl": ("an owl", "owl hoot"),
    "elephant": ("elephants", "an elephant's trumpet call"),
    "sea mammal": ("a whale", "dolphins clicking"),
    "door": ("a door", "door slamming shut"),
    "footsteps": ("someone's footsteps", "walking sounds"),
    "engine": ("a car", "an engine revving"),
    "train": ("a train", "train horn and wheels"),
    "aircraft": ("a plane flying over", "helicopter blades"),
    "explosion": ("a bomb", "something exploding"),
    "gunshot": ("gun shots", "a shotgun blast"),
    "bell": ("a ringing phone", "church bells"),
    "glass": ("breaking glass", "a glass shattering"),
    "water": ("water sloshing", "splashing"),
    "applause": ("clapping", "the audience clapping"),
    "laughter": ("laughing", "a kid giggling"),
    "scream": ("screaming", "a woman screams"),
    "baby crying": ("a baby", "an infant wailing"),
    "cough": ("coughing", "sneezing"),
    "grunt": ("groaning", "a man grunting"),
    "knock": ("knocking on a door", "a knock"),
    "clock": ("a ticking clock", "tick tock of a clock"),
    "horn": ("honking", "a car honking its horn"),
    "typing": ("keyboard typing", "typewriter keys"),
    "beep": ("beeping", "a beeping alarm"),
    "impact": ("a thud", "something hitting"),
    "crash": ("crashing", "a car crashing"),
    "whoosh": ("swooshing", "a whooshing sound"),
    "tools": ("a power drill", "sawing wood"),
    "machine": ("a vacuum", "machinery running"),
    "coins": ("some coins", "jingling change"),
    "laser": ("laser blasts", "a sci-fi zap"),
    "cartoon": ("a boing", "a cartoon sound"),
    "digging": ("shoveling", "digging in the dirt"),
    "wind": ("the wind", "windy"),
    "rain": ("rain on a roof", "heavy rain"),
    "thunder": ("thunder claps", "a thunder storm"),
    "fire": ("a fire", "crackling flames"),
    "stream": ("a river", "a creek flowing"),
    "crowd": ("crowd noise", "people talking in a bar"),
    "drone": ("humming", "a low drone"),
    "nature": ("forest sounds", "the countryside"),
}

# Keyword rules: (regex on the lower-cased text, category). First match wins, so specific rules
# come before generic ones. Tokens are matched on word-ish boundaries.
RULES: list[tuple[str, str]] = [
    # music first: instrument names are the most specific words in a title
    (r"cymbal|hi.?hat|hihat|hhat|\bhat\b|\bride\b|\bchina\b|drum.*\b(crash|splash)\b|\bsplash (hard|soft)", "cymbal"),
    (r"tabla|bongo|conga|shaker|maraca|tambourine|cowbell|castanet|triangle|clave|guiro|djembe|hand.?clap|\bclap\b|finger.?snap|\bperc\b|percussion|timpani|beat.?box", "percussion"),
    (r"drum|kick|snare|\btoms?\b|\bbd\b|\bsn\b|rimshot|\brim\b|breakbeat|\bamen\b|hip.?hop", "drums"),
    (r"piano|\bkeys\b", "piano"),
    (r"organ", "organ"),
    (r"choir|chorus|aahs", "choir"),
    (r"\bharp\b", "harp"),
    (r"accordion|harmonica|concertina", "accordion"),
    (r"xylo|glockenspiel|marimba|vibraphone|celesta|music.?box|kalimba", "bells"),
    (r"\bbass\b|bassline|contrabass", "bass"),
    (r"guitar|\bguit\b|banjo|\bstrum|pluck|tambura|afro.?string|sitar|ukulele|mandolin", "guitar"),
    (r"violin|viola|cello|fiddle|\bstrings?\b|orchestra", "strings"),
    (r"flute|piccolo|recorder|dijjeridoo|didgeridoo|pan.?pipe", "flute"),
    (r"clarinet|sax|oboe|bassoon", "woodwinds"),
    (r"trumpet|trombone|tuba|instrument horn|brass|fanfare|cornet|bugle|horn signals", "brass"),
    (r"synth|\belec\b|\bglitch\b", "synthesizer"),
    (r"singer|singing|sing me|vocals?\b", "singing"),
    # human sounds
    (r"scream|shriek|wilhelm|\byell|\bwail", "scream"),
    (r"laugh|giggl", "laughter"),
    (r"baby.?cry|crying", "baby crying"),
    (r"cough|sneeze|burp", "cough"),
    (r"applause|applaus|clapping", "applause"),
    (r"crowd|party.?noise|restaurant|chatter|audience", "crowd"),
    (r"footstep|\bwalk|gallop|canter|\btrot", "footsteps"),
    # animals
    (r"horse|neigh|pony|donkey|zebra", "horse"),
    (r"\bdog|bark|puppy|hound|\bfox\b", "dog"),
    (r"kitten|meow|\bcats?\b|blackcat", "cat"),
    (r"rooster|chicken|\bhens?\b|cockerel|turkey", "chicken"),
    (r"\bduck|\bdrake\b|goose|gander|quack", "duck"),
    (r"\bowl\b", "owl"),
    (r"wolf|howl", "wolf"),
    (r"sea ?lion|dolphin|whale|\borca\b|\bseal\b", "sea mammal"),
    (r"\blion\b|tiger|\broar", "big cat"),
    (r"\bcows?\b|cattle|\bbull\b|bison|\bmoo\b", "cow"),
    (r"sheep|\blamb\b|\bgoat|\bram\b|mountaingoat|bleat", "sheep"),
    (r"\bpigs?\b|oink|\bhog\b", "pig"),
    (r"\bfrogs?\b|\btoad", "frog"),
    (r"cricket|\bbee\b|hornet|mosquito|insect|grasshopper", "insect"),
    (r"monkey|chimp|gorilla|\bapes?\b", "monkey"),
    (r"elephant", "elephant"),
    (r"\bbirds? (noise|call|song)|\bbird\b|\bcrow\b|cuckoo|\blark\b|seagull|tucan|vulture|nandou|quetzal|heron|parrot|exotic birds", "bird"),
    # weather and ambience
    (r"thunder|lightning", "thunder"),
    (r"\brain\b|rain in|raindrop", "rain"),
    (r"\bwind\b|heavy wind|windy|\bgust|breeze", "wind"),
    (r"waterfall|\briver|\bstream\b|brook|water ?running|water fill|env sounds water", "stream"),
    (r"campfire|crackl|flame|fire fire|fire large|fire small|^fire$|^fire |burning|\btorch|\blava\b", "fire"),
    (r"night|morning|forest|jungle|nature|safari|\bbirds\d*\b", "nature"),
    # events
    (r"explo|\bbomb|\bblast|\bboom\b|fireworks|\btnt\b|cineboom", "explosion"),
    (r"gunshot|\bgun\b|rifle|thunderstick|\bshoot", "gunshot"),
    (r"\bdoors?\b|\bgate\b|fencegate|chest (open|close)|open chest", "door"),
    (r"glass|bottle|shatter", "glass"),
    (r"knock|\bwood\b|wooden|mallet", "knock"),
    (r"helicopter|airplane|\bplane\b|\bjet\b|aircraft|propeller|spaceship engine", "aircraft"),
    (r"\btrains?\b(?! ship)|locomotive|railroad|\brail\b|maglev|monorail|level crossing|\btram\b|steam engine", "train"),
    (r"\bhorn\b|claxon|hooter|factory whistle", "horn"),
    (r"\bcar\b|\bcars\b|motorcycle|engine|\bmotor\b|truck|\bbus\b|vehicle|\bkart\b|accel|revup|tractor|skid", "engine"),
    (r"crash|smash|collapse|cave in|breakdown|\bbreak\b|tool breaks|\bfalling\b", "crash"),
    (r"chainsaw|\bsaw\b|sawmill|hammer|\bdrill|anvil|scissors|\baxe\b|hatchet|pickaxe|metal clang|smithy|building bridge", "tools"),
    (r"sewing|washing|vacuum|machine|factory|\bmill\b|furnace|kettle|printer|elevator|industrial|mining machinery", "machine"),
    (r"typing|typewriter|keyboard", "typing"),
    (r"clock|\btick\b|timer|metronome", "clock"),
    (r"\bcoins?\b|money|\bcash|\btill\b|\bgold\b", "coins"),
    (r"\bbells?\b|\btoll|chime|\bring\b|ringing|phone|\bgong\b", "bell"),
    (r"splash|\bdrip|water drop|bubble|plunge|ripple|\bwater\b|slurp|splat|squish|\bmud\b|\bgoo\b", "water"),
    (r"\bdig\b|\bdug\b|gravel|shovel|excavat", "digging"),
    (r"laser|alien|space|\bzap|magic|spell|portal|forcefield|tractor beam|\bufo\b|robot|fairy|spiral|whoop|zoop|screech|heal|entangle|petrif|slowed", "laser"),
    (r"whoosh|woosh|swoosh|swish|swash|\bswing|dagger|sword|spear|staff|\bwhip|arrow|\bbow\b|throw|knife|\bdart\b|\bmiss\b", "whoosh"),
    (r"groan|grunt|\bmoan|\bhit\b|\bdie\b|death|hurt|damage|\bugh\b|\bugg\b|\boooh\b", "grunt"),
    (r"impact|punch|\bfist\b|thud|thump|\bclub\b|\bmace\b|flail|strike|\bslam|place node|claws|\bbite\b|pincers|\btail\b|\bhits\b", "impact"),
    (r"beep|bleep|blip|bzzt|click|button|select|notification|alert|\bping\b|plip|twip|blup|\btone\b|morse|\bdot\b|\bdash\b|checkbox|slider", "beep"),
    (r"\bpop\b|boing|inflate|squeak|cartoon|rattle|balloon|plunger|\bwee\b|\bplopp?\b|comedy|toyland", "cartoon"),
    (r"drone|\bhum\b|buzz|dark woosh|ambient", "drone"),
]
_COMPILED = [(re.compile(pattern), category) for pattern, category in RULES]


def normalise_text(text: str) -> str:
    """Lower-case words: camelCase split, digits split off, ``_ . / -`` turned into spaces."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", text)
    spaced = re.sub(r"([A-Za-z])(\d)", r"\1 \2", spaced)
    return " ".join(re.sub(r"[_./\-]+", " ", spaced.lower()).split())


def categorize(text: str, groups: tuple[str, ...] | None = None) -> str | None:
    """The category named by free text (a file name, a title), or ``None`` when no rule fires.

    ``groups`` restricts the rules to categories of those groups (e.g. only music names
    for a music loop called "Jungle").
    """
    lowered = normalise_text(text)
    for pattern, name in _COMPILED:
        if groups is not None and CATEGORIES[name].group not in groups:
            continue
        if pattern.search(lowered):
            return name
    return None


def category(name: str) -> Category:
    """Look a category up by name; ``KeyError`` names the unknown category."""
    try:
        return CATEGORIES[name]
    except KeyError:
        raise KeyError(f"unknown category {name!r}; known: {', '.join(sorted(CATEGORIES))}") from None


def group_of(name: str) -> str:
    return category(name).group


def paraphrase(category_name: str, rng: np.random.Generator) -> str:
    """A random training phrasing of the category (never a held-out one)."""
    phrasings = category(category_name).phrasings
    return str(phrasings[int(rng.integers(len(phrasings)))])


def heldout_prompts(category_name: str) -> list[str]:
    """Phrasings that training never uses, for benchmarks of prompt generalisation."""
    return list(category(category_name).heldout)


def captions(category_name: str, detail: str | None = None) -> list[str]:
    """Several audio captions for a clip: the training phrasings, plus one with ``detail``.

    ``detail`` (e.g. a title or a transcript) makes one caption specific to the clip.
    """
    result = list(category(category_name).phrasings)
    if detail:
        result.append(f"{category(category_name).phrasings[1]}: {detail}")
    return result


def visual_caption(category_name: str) -> str:
    return category(category_name).visual[0]


def av_caption(category_name: str) -> str:
    """An audio-visual caption: what is seen and what is heard."""
    entry = category(category_name)
    return f"{entry.visual[0]}, with the sound of {entry.phrasings[1]}"
